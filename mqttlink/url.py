"""Broker URLs: `mqtt://user:pass@host:port` or `mqtts://...` (TLS), from a flag or FLEETROOM_BROKER.

A TLS URL may carry its trust material as query parameters, `?ca=FILE&cert=FILE&key=FILE`,
so that a child process handed the URL trusts the same CA; `--ca-file` and $FLEETROOM_CA
(and the client certificate flags and variables) fill in what the URL leaves out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

BROKER_ENV = "FLEETROOM_BROKER"
CA_ENV = "FLEETROOM_CA"
CLIENT_CERT_ENV = "FLEETROOM_CLIENT_CERT"
CLIENT_KEY_ENV = "FLEETROOM_CLIENT_KEY"
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
_TLS_QUERY = {"ca": "ca_file", "cert": "client_cert", "key": "client_key"}


class BrokerUrlError(ValueError):
    """A broker URL that cannot be used; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where an MQTT 3.1.1 broker is, who to log in as, and (for mqtts) which CA and client certificate to use.

    `client_cert` may name a directory of per-user certificates (`NAME.crt`, `NAME.key`), as
    `fleetroom certs issue` writes them; each login then presents its own.
    """

    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def with_credentials(self, username: str | None, password: str | None) -> BrokerUrl:
        """The same broker, logged in as someone else."""
        return replace(self, username=username, password=password)

    def with_tls_files(
        self, ca_file: str | None = None, client_cert: str | None = None, client_key: str | None = None
    ) -> BrokerUrl:
        """The same broker with these TLS files (absolute paths) in place of the ones it names."""
        if not self.tls and (ca_file or client_cert or client_key):
            raise BrokerUrlError(f"a CA file or client certificate needs an mqtts:// broker URL, not {self}")
        return replace(
            self,
            ca_file=_absolute(ca_file) or self.ca_file,
            client_cert=_absolute(client_cert) or self.client_cert,
            client_key=_absolute(client_key) or self.client_key,
        )

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls else "mqtt"

    def _query(self) -> str:
        pairs = [(k, getattr(self, attr)) for k, attr in _TLS_QUERY.items() if getattr(self, attr)]
        return f"?{urlencode(pairs, safe='/')}" if pairs else ""

    def __str__(self) -> str:
        """The URL without its password, safe to print (and complete enough for a child without one)."""
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}{self._query()}"

    def full(self) -> str:
        """The URL with its password, for handing to a child process."""
        if not self.username:
            return str(self)
        secret = f":{quote(self.password, safe='')}" if self.password is not None else ""
        return f"{self.scheme}://{quote(self.username, safe='')}{secret}@{self.host}:{self.port}{self._query()}"


def _absolute(path: str | None) -> str | None:
    """A path that still names the same file from a child process started in another directory."""
    return os.path.abspath(os.path.expanduser(path)) if path else None


def _tls_files(text: str, query: str) -> dict[str, str]:
    """The `ca`, `cert` and `key` query parameters of a TLS URL, as absolute paths."""
    files: dict[str, str] = {}
    for key, values in parse_qs(query, keep_blank_values=True, strict_parsing=True).items():
        if key not in _TLS_QUERY or len(values) != 1 or not values[0]:
            raise BrokerUrlError(f"bad broker URL {text!r}: the query may only give ca=, cert= and key= once each")
        files[_TLS_QUERY[key]] = _absolute(values[0]) or ""
    return files


def parse_broker_url(text: str) -> BrokerUrl:
    """Parse `mqtt[s]://[user[:pass]@]host[:port][?ca=&cert=&key=]`; raise `BrokerUrlError` naming the problem."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise BrokerUrlError(f"bad broker URL {text!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "tcp", "mqtts"):
        raise BrokerUrlError(
            f"bad broker URL {text!r}: the scheme must be mqtt:// or mqtts:// (TLS) (got {parts.scheme!r})"
        )
    tls = parts.scheme == "mqtts"
    if not parts.hostname:
        raise BrokerUrlError(f"bad broker URL {text!r}: no host")
    if parts.path not in ("", "/") or parts.fragment or (parts.query and not tls):
        raise BrokerUrlError(f"bad broker URL {text!r}: only mqtt://user:pass@host:port (or mqtts://) is understood")
    if port == 0:
        raise BrokerUrlError(f"bad broker URL {text!r}: port 0 is not a broker's port")
    try:
        files = _tls_files(text, parts.query) if parts.query else {}
    except ValueError as exc:
        if isinstance(exc, BrokerUrlError):
            raise
        raise BrokerUrlError(f"bad broker URL {text!r}: {exc}") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    default_port = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    return BrokerUrl(parts.hostname, port or default_port, username, password, tls, **files)


def tls_files_from_env(url: BrokerUrl) -> BrokerUrl:
    """A TLS URL completed from $FLEETROOM_CA, $FLEETROOM_CLIENT_CERT and $FLEETROOM_CLIENT_KEY.

    The URL's own files win; a plain mqtt:// URL is returned as it is (the variables may be
    meant for another broker).
    """
    if not url.tls:
        return url
    return replace(
        url,
        ca_file=url.ca_file or _absolute(os.environ.get(CA_ENV)),
        client_cert=url.client_cert or _absolute(os.environ.get(CLIENT_CERT_ENV)),
        client_key=url.client_key or _absolute(os.environ.get(CLIENT_KEY_ENV)),
    )


def broker_url_from(flag: str | None) -> BrokerUrl | None:
    """The broker named by a `--broker` flag, else by FLEETROOM_BROKER, else None (TLS files from the environment)."""
    text = flag or os.environ.get(BROKER_ENV)
    return tls_files_from_env(parse_broker_url(text)) if text else None
