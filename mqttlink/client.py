"""The one MQTT client helper: client ids owned by their user, a Last Will, reconnection with backoff.

Every long-lived connection in fleetroom is `stay_connected(url, client_id, session)`: a loop
around a fresh aiomqtt client, as aiomqtt recommends. `session(client)` subscribes and serves;
it is called again after each reconnect, so it must (re)subscribe every time.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import aiomqtt

from mqttlink.backoff import Backoff
from mqttlink.tls import shared_client_ssl_context, silent_close_hint, tls_problem
from mqttlink.url import BrokerUrl
from protocol.identity import client_id_for

log = logging.getLogger(__name__)


class BrokerUnreachable(RuntimeError):
    """The broker cannot be used at start-up; the message is one line for the user."""


class LinkState(StrEnum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A change of connection state, with the reason when it was lost."""

    state: LinkState
    reason: str = ""
    attempt: int = 0


Session = Callable[[aiomqtt.Client], Awaitable[None]]
StateCallback = Callable[[LinkEvent], None]
DropCallback = Callable[[], None]


def _counting_queue(on_drop: DropCallback) -> type[asyncio.Queue[aiomqtt.Message]]:
    """aiomqtt's incoming queue, telling `on_drop` of every message it had no room for.

    aiomqtt discards a message that finds the queue full with only a log line; a reader that
    falls that far behind must be able to show how much it lost.
    """

    class CountingQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            try:
                super().put_nowait(item)
            except asyncio.QueueFull:
                on_drop()
                raise

    return CountingQueue


def new_client_id(name: str) -> str:
    """A fresh client id owned by user `name`: `name:` and 48 random bits (see `client_id_for`).

    Brokers with fleet credentials accept a client id only from the user it names, so `name`
    must be the user the client logs in as; an anonymous client passes a word for its role.
    A client id is not a topic level (':' is not allowed in one): name topics by user name.
    """
    return client_id_for(name)


def client_id_of(url: BrokerUrl, role: str) -> str:
    """A fresh client id for a client logging in with `url`: its user's, or `role`'s if anonymous."""
    return new_client_id(url.username or role)


def make_client(
    url: BrokerUrl,
    client_id: str,
    *,
    will: aiomqtt.Will | None = None,
    keepalive: int = 30,
    max_queued_incoming: int | None = None,
    timeout: float = 10.0,
    on_drop: DropCallback | None = None,
) -> aiomqtt.Client:
    """An MQTT 3.1.1 aiomqtt client for `url`; must be created inside the running loop.

    With `max_queued_incoming`, messages arriving while that many wait unread are dropped;
    `on_drop` is called once for each. An mqtts:// URL gets a verifying TLS context (see
    `mqttlink.tls`); a bad CA or certificate file raises `BrokerUrlError`.
    """
    return aiomqtt.Client(
        hostname=url.host,
        port=url.port,
        username=url.username,
        password=url.password,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V311,
        will=will,
        clean_session=True,
        keepalive=keepalive,
        timeout=timeout,
        max_queued_incoming_messages=max_queued_incoming,
        queue_type=None if on_drop is None else _counting_queue(on_drop),
        tls_context=shared_client_ssl_context(url) if url.tls else None,
    )


def describe_error(url: BrokerUrl, exc: BaseException) -> str:
    """One line that says why `url` could not be used."""
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    problem = tls_problem(text)
    if problem is not None:
        return f"TLS with the MQTT broker at {url} failed: {problem}"
    if "not authori" in lowered or "bad user name" in lowered or "code:5" in lowered or "code:4" in lowered:
        who = url.username or "anonymous"
        return f"the MQTT broker at {url} refused the login of {who!r}: {text}"
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
        return f"cannot reach the MQTT broker at {url}: connection refused (is it running?)"
    if isinstance(cause, socket.gaierror):
        return f"cannot reach the MQTT broker at {url}: unknown host {url.host!r}"
    if "refused" in lowered:
        return f"cannot reach the MQTT broker at {url}: connection refused (is it running?)"
    return f"cannot use the MQTT broker at {url}: {text}{silent_close_hint(url)}"


async def check_broker(url: BrokerUrl, client_id: str | None = None, timeout: float = 5.0) -> None:
    """Connect once and leave; raise `BrokerUnreachable` with one clear line if that fails."""
    client = make_client(url, client_id or client_id_of(url, "probe"), timeout=timeout)
    try:
        async with asyncio.timeout(timeout + 1):
            async with client:
                return
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        raise BrokerUnreachable(describe_error(url, exc)) from None


async def stay_connected(
    url: BrokerUrl,
    client_id: str,
    session: Session,
    *,
    will: aiomqtt.Will | None = None,
    on_state: StateCallback | None = None,
    backoff: Backoff | None = None,
    must_connect_first: bool = True,
    keepalive: int = 30,
    max_queued_incoming: int | None = None,
    on_drop: DropCallback | None = None,
) -> None:
    """Run `session` on a connected client until it returns, reconnecting whenever it is lost.

    With `must_connect_first`, a failure of the very first attempt raises `BrokerUnreachable`
    (fail loud at start-up); afterwards every loss is retried with backoff and jitter.
    """
    backoff = backoff or Backoff()
    notify = on_state or (lambda event: None)
    connected_once = False
    notify(LinkEvent(LinkState.CONNECTING))
    while True:
        client = make_client(
            url, client_id, will=will, keepalive=keepalive, max_queued_incoming=max_queued_incoming, on_drop=on_drop
        )
        try:
            async with client:
                connected_once = True
                backoff.reset()
                notify(LinkEvent(LinkState.CONNECTED))
                await session(client)
                notify(LinkEvent(LinkState.CLOSED))
                return
        except (aiomqtt.MqttError, OSError) as exc:
            reason = describe_error(url, exc)
            if not connected_once and must_connect_first:
                raise BrokerUnreachable(reason) from None
            delay = backoff.next_delay()
            log.info("%s: connection lost (%s); retrying in %.1fs", client_id, reason, delay)
            notify(LinkEvent(LinkState.RECONNECTING, reason, backoff.attempt))
            await asyncio.sleep(delay)
