"""Broker URLs: `mqtt://user:pass@host:port`, from a flag or the FLEETROOM_BROKER variable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

BROKER_ENV = "FLEETROOM_BROKER"
DEFAULT_PORT = 1883


class BrokerUrlError(ValueError):
    """A broker URL that cannot be used; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where an MQTT 3.1.1 broker is and who to log in as."""

    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None

    def with_credentials(self, username: str | None, password: str | None) -> BrokerUrl:
        """The same broker, logged in as someone else."""
        return BrokerUrl(self.host, self.port, username, password)

    def __str__(self) -> str:
        """The URL without its password, safe to print."""
        user = f"{self.username}@" if self.username else ""
        return f"mqtt://{user}{self.host}:{self.port}"

    def full(self) -> str:
        """The URL with its password, for handing to a child process."""
        if not self.username:
            return str(self)
        from urllib.parse import quote

        secret = f":{quote(self.password, safe='')}" if self.password is not None else ""
        return f"mqtt://{quote(self.username, safe='')}{secret}@{self.host}:{self.port}"


def parse_broker_url(text: str) -> BrokerUrl:
    """Parse `mqtt://[user[:pass]@]host[:port]`; raise `BrokerUrlError` naming the problem."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise BrokerUrlError(f"bad broker URL {text!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "tcp"):
        raise BrokerUrlError(f"bad broker URL {text!r}: the scheme must be mqtt:// (got {parts.scheme!r})")
    if not parts.hostname:
        raise BrokerUrlError(f"bad broker URL {text!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerUrlError(f"bad broker URL {text!r}: only mqtt://user:pass@host:port is understood")
    if port == 0:
        raise BrokerUrlError(f"bad broker URL {text!r}: port 0 is not a broker's port")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return BrokerUrl(parts.hostname, port or DEFAULT_PORT, username, password)


def broker_url_from(flag: str | None) -> BrokerUrl | None:
    """The broker named by a `--broker` flag, else by FLEETROOM_BROKER, else None."""
    text = flag or os.environ.get(BROKER_ENV)
    return parse_broker_url(text) if text else None
