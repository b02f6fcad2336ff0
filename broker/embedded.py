"""The zero-setup broker: amqtt 0.12.1 in this process, on 127.0.0.1 and a port of your choice."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from amqtt.broker import Broker

from broker.acl import FleetAcl
from broker.amqtt_fixes import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_MAX_PACKET_BYTES, FleetBroker, SessionRules
from broker.tls import TlsFiles, server_ssl_context
from protocol.topics import DEFAULT_PREFIX, Topics

QUIET_LOGGERS = ("amqtt", "transitions")


class _DropStartupTraceback(logging.Filter):
    """amqtt logs a traceback when it cannot bind; `EmbeddedBroker.start` raises a clear error instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Broker startup failed"


_DROP_STARTUP_TRACEBACK = _DropStartupTraceback()


class BrokerStartError(RuntimeError):
    """The embedded broker could not start; the message is one line for the user."""


def quiet_broker_logging() -> None:
    """amqtt and transitions log about nine INFO lines per connection: keep them at WARNING."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("amqtt.broker").addFilter(_DROP_STARTUP_TRACEBACK)


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """How to run the embedded broker."""

    host: str = "127.0.0.1"
    port: int = 0
    allow_anonymous: bool = False
    secret: bytes = b""
    topic_prefix: str = DEFAULT_PREFIX
    max_connections: int = 0  # 0: no limit
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S  # a socket that sends no CONNECT is closed after this
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES  # a larger packet closes its connection
    tls: TlsFiles | None = None  # serve TLS only (no plain-text listener), with these files
    require_client_cert: bool = False  # with `tls`: mutual TLS, the certificate's CN must be the user name

    def __post_init__(self) -> None:
        Topics(self.topic_prefix)  # raises TopicError on a bad prefix
        if self.connect_timeout_s <= 0 or self.max_packet_bytes <= 0:
            raise ValueError("the connect timeout and the packet size cap must be positive")
        if not self.allow_anonymous and not self.secret:
            raise ValueError("the broker needs a fleet secret unless anonymous access is allowed")
        if self.require_client_cert and self.tls is None:
            raise ValueError("client certificates need TLS")


def amqtt_config(settings: BrokerSettings) -> dict[str, Any]:
    """An explicit amqtt config: our listener, our plugins, nothing from amqtt's defaults."""
    plugins: dict[str, Any] = {
        "broker.amqtt_plugins.FleetAuthPlugin": {
            "secret": settings.secret.decode(),
            "allow_anonymous": settings.allow_anonymous,
            "topic_prefix": settings.topic_prefix,
            "require_client_cert": settings.require_client_cert,
        }
    }
    if not settings.allow_anonymous:
        plugins["broker.amqtt_plugins.FleetAclPlugin"] = {"topic_prefix": settings.topic_prefix}
    listener: dict[str, Any] = {
        "type": "tcp",
        "bind": f"{settings.host}:{settings.port}",
        "max_connections": settings.max_connections,
    }
    if settings.tls is not None:  # the context itself comes from `TlsFleetBroker`
        files = settings.tls
        listener |= {"ssl": True, "cafile": str(files.ca_cert), "certfile": str(files.server_cert),
                     "keyfile": str(files.server_key)}
    return {"listeners": {"default": listener}, "plugins": plugins}


class TlsFleetBroker(FleetBroker):
    """`FleetBroker` whose TLS listener uses our context: TLS 1.2+, and client certificates required if asked.

    amqtt 0.12.1 builds its own context in `Broker._create_ssl_context` (a static method) with
    client certificates optional and no floor on the TLS version; this is the one override.
    """

    def __init__(self, *args: Any, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fleet_ssl_context = ssl_context

    def _create_ssl_context(self, listener: Any) -> ssl.SSLContext:
        return self._fleet_ssl_context


def bound_port(broker: Broker) -> int:
    """The TCP port the default listener really bound (the one to use when asking for port 0).

    amqtt exposes listeners only through the private `_servers` map; this is the one place
    that reads it, so an amqtt upgrade breaks here and nowhere else (amqtt is pinned).
    """
    server = broker._servers["default"]  # private: see docstring
    sockets = getattr(server.instance, "sockets", None) or ()
    for sock in sockets:
        return int(sock.getsockname()[1])
    raise RuntimeError("the embedded broker has no bound socket")


class EmbeddedBroker:
    """An async context manager that runs amqtt until the block ends.

    Build it inside the running loop. `port` is the real port after entry; `restart()` stops
    and starts it on the same port (for tests of reconnection).
    """

    def __init__(self, settings: BrokerSettings | None = None) -> None:
        self.settings = settings or BrokerSettings(allow_anonymous=True)
        self._broker: Broker | None = None
        self.port: int = 0

    @property
    def host(self) -> str:
        return self.settings.host

    async def start(self) -> None:
        """Start listening (on the remembered port after a restart)."""
        quiet_broker_logging()
        port = self.port or self.settings.port
        settings = replace(self.settings, port=port)
        try:
            broker = _new_broker(settings)
            await broker.start()
        except Exception as exc:  # amqtt wraps every start-up failure in its BrokerError
            cause = exc.__cause__
            reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc)
            raise BrokerStartError(
                f"cannot start the broker on {self.settings.host}:{port}: {reason.rsplit(': ', 1)[-1]}"
            ) from None
        self._broker = broker
        self.port = bound_port(broker)

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    async def restart(self) -> None:
        """Stop, then start again on the same port."""
        await self.stop()
        await self.start()

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def session_rules(settings: BrokerSettings) -> SessionRules:
    """What `FleetBroker` enforces: identities and retain rules only with fleet credentials."""
    acl = None if settings.allow_anonymous else FleetAcl(Topics(settings.topic_prefix))
    return SessionRules(acl, settings.connect_timeout_s, settings.max_packet_bytes)


def _new_broker(settings: BrokerSettings) -> Broker:
    """amqtt configured by `settings` (built inside the running loop, as amqtt requires)."""
    config = amqtt_config(settings)
    loop = asyncio.get_running_loop()
    rules = session_rules(settings)
    if settings.tls is None:
        return FleetBroker(config, loop=loop, rules=rules)
    context = server_ssl_context(settings.tls, require_client_cert=settings.require_client_cert)
    return TlsFleetBroker(config, loop=loop, rules=rules, ssl_context=context)
