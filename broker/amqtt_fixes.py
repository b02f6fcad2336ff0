"""Fixes to amqtt 0.12.1 (pinned), kept in one place so an upgrade is checked here.

1. On every new connection amqtt sends the new client the retained messages matching *every*
   client's subscription filters, not its own, and without asking the ACL plugins: a car would
   receive other cars' retained statuses and every job state, and a dashboard would receive
   each retained message several times. `FleetBroker` sends retained messages only for
   filters the session itself holds.
2. amqtt iterates its subscription map across `await`s (on connect and on broadcast), so a
   subscription made meanwhile raises "dictionary changed size during iteration". The map is
   replaced by one that iterates over a snapshot.
3. To stop a connection amqtt cancels its reader task once and waits for it to say it stopped.
   The reader reads through `asyncio.wait_for`, which on Python 3.11 drops a cancellation that
   lands as a packet arrives (CPython gh-86296): the reader reads on, and the broker's shutdown
   or restart waits for ever. `FleetBroker` cancels the reader until it has really ended.
4. A refused CONNECT changes nothing. amqtt reads a CONNECT, then deletes the session of its
   client id (clean session: the victim stays connected but deaf) or copies the new Will and
   credentials into it and kicks its connection (persistent session), and only then asks the
   auth plugins; a refused login's session stays in `_sessions` for ever. `FleetBroker` first
   asks the plugins (which check the Last Will against the ACL) and, with fleet credentials,
   that the user owns the client id; a refusal gets its CONNACK and leaves no trace.
5. Session takeover as MQTT-3.1.4-2 requires: amqtt leaves a clean-session client's old
   connection open but deaf, and lets a persistent session's old connection mark the session
   disconnected after the new one took it. `FleetBroker` closes the old connection and waits
   for it to end (its Will fires, as on Mosquitto) before the new one takes the id.
6. amqtt waits for ever for a CONNECT: a socket that sends none within `connect_timeout_s`
   is closed.
7. amqtt reads a packet's whole announced body (up to 256 MB) into memory. A packet announced
   larger than `max_packet_bytes` closes its connection as soon as its fixed header is read.
8. amqtt's topic plugins are not told a PUBLISH's retain flag. With fleet credentials a
   retained PUBLISH is dropped unless the ACL's `retain` filters allow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import ItemsView, Iterator
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import ListenerConfig
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import IDENTIFIER_REJECTED, NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, Session

from broker.acl import FleetAcl
from mqttlink.tasks import cancel_and_wait
from protocol.identity import owns_client_id

log = logging.getLogger(__name__)

READER_RECANCEL_AFTER_S = 1.0  # long enough for a reader's own clean-up after the first cancel
TAKEOVER_WAIT_S = 5.0  # how long a new connection waits for the one it takes over to end
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_PACKET_BYTES = 256 * 1024  # protocol payloads are at most 64 KiB
MAX_LENGTH_BYTES = 4  # MQTT's remaining length takes one to four bytes
_ANY_LISTENER = ListenerConfig()  # amqtt 0.12.1's `_authenticate` ignores its listener argument
_RESUMED_FIELDS = (
    "will_flag", "will_topic", "will_message", "will_qos", "will_retain", "keep_alive", "username", "password"
)


@dataclass(frozen=True, slots=True)
class SessionRules:
    """What `FleetBroker` enforces on connections beyond amqtt's own checks."""

    acl: FleetAcl | None = None  # None: an anonymous broker, with no identities to check
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES


class ConnectRefused(AMQTTError):
    """A CONNECT answered with a refusal; nothing of it was kept."""


class SnapshotDict(dict[str, Any]):
    """A dict whose iteration and `items()` walk a copy, so it may change while they run."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]  # a copy's view
        return dict(super().items()).items()


class PacketSizeCap(ReaderAdapter):
    """amqtt's reader, ended at the first packet whose fixed header announces more than `max_bytes`.

    It follows MQTT's framing as the bytes pass through (a fixed header, then a body it skips
    without looking), so it decides on the header alone, before any of the body is read.
    """

    def __init__(self, inner: ReaderAdapter, max_bytes: int, peer: str) -> None:
        self._inner = inner
        self._max_bytes = max_bytes
        self._peer = peer
        self._body_left = 0
        self._header_bytes = 0  # bytes of the current fixed header seen; 0: a packet starts next
        self._length = 0
        self.over_cap = False

    async def read(self, n: int = -1) -> bytes:
        if self.over_cap:
            return b""
        data: bytes = await self._inner.read(n)
        if self._follow(data):
            self.over_cap = True
            log.warning(
                "closed the connection from %s: a packet of %d bytes or more (the cap is %d)",
                self._peer, self._header_bytes + self._length, self._max_bytes,
            )
            return b""  # amqtt takes this for the end of the stream and closes the connection
        return data

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def _follow(self, data: bytes) -> bool:
        """Track packet boundaries through `data`; True as soon as a packet is over the cap."""
        i = 0
        while i < len(data):
            if self._body_left:
                step = min(self._body_left, len(data) - i)
                self._body_left -= step
                i += step
                continue
            byte = data[i]
            i += 1
            if self._header_bytes == 0:  # packet type and flags
                self._header_bytes, self._length = 1, 0
                continue
            self._length += (byte & 0x7F) << (7 * (self._header_bytes - 1))
            self._header_bytes += 1
            if self._header_bytes + self._length > self._max_bytes or self._header_bytes > 1 + MAX_LENGTH_BYTES:
                return True
            if not byte & 0x80:  # the last byte of the remaining length
                self._body_left, self._header_bytes = self._length, 0
        return False


class FleetBroker(Broker):
    """amqtt's broker with the fixes above."""

    def __init__(self, *args: Any, rules: SessionRules | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = SnapshotDict()  # private attribute of amqtt's Broker: see fix 2
        self._rules = rules or SessionRules()
        self._connections: dict[WriterAdapter, asyncio.Task[Any]] = {}  # each connection's task: fix 5

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        """One TCP connection, read through the packet size cap (fix 7), closed when it ends."""
        peer = writer.get_extra_info("peername")
        capped = PacketSizeCap(StreamReaderAdapter(reader), self._rules.max_packet_bytes, _peer_text(peer))
        adapter = StreamWriterAdapter(writer)
        task = asyncio.current_task()
        if task is not None:
            self._connections[adapter] = task
        try:
            await self._client_connected(listener_name, capped, adapter)
        finally:
            self._connections.pop(adapter, None)
            writer.close()  # amqtt leaves a socket open when it gives up on its CONNECT

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """amqtt's own, with the CONNECT judged before any session is touched (fixes 4 to 6)."""
        handler, session = await self._read_connect(reader, writer, f"{remote_address}:{remote_port}")
        await self._refuse_unless_allowed(session, writer)
        assert session.client_id is not None  # amqtt generates one for an empty client id
        await self._take_over(session.client_id)
        if session.clean_session:
            await self._delete_session(session.client_id)
            session.parent = 0
        elif (stored := self._sessions.get(session.client_id)) is not None:
            session = _resume(stored[0], session)
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _read_connect(
        self, reader: ReaderAdapter, writer: WriterAdapter, peer: str
    ) -> tuple[BrokerProtocolHandler, Session]:
        """The opening CONNECT, read within the connect timeout (fix 6)."""
        try:
            async with asyncio.timeout(self._rules.connect_timeout_s):
                opened: tuple[BrokerProtocolHandler, Session] = await BrokerProtocolHandler.init_from_connect(
                    reader, writer, self.plugins_manager
                )
                return opened
        except TimeoutError:
            raise AMQTTError(f"{peer} sent no CONNECT within {self._rules.connect_timeout_s:g} s") from None
        except (MQTTError, NoDataError) as exc:
            raise AMQTTError(f"{peer} did not open with a valid CONNECT: {exc}") from None

    async def _refuse_unless_allowed(self, session: Session, writer: WriterAdapter) -> None:
        """Fix 4: answer a CONNECT that may not log in with its refusal, and raise `ConnectRefused`."""
        code = await self._refusal(session)
        if code is None:
            return
        with contextlib.suppress(OSError):  # the connection ends either way
            await ConnackPacket.build(0, code).to_stream(writer)
        raise ConnectRefused(f"refused the login of {session.username!r} as {session.client_id!r} (CONNACK {code})")

    async def _refusal(self, session: Session) -> int | None:
        """The CONNACK code refusing this CONNECT, or None if it may log in."""
        try:
            authenticated = await self._authenticate(session, _ANY_LISTENER)  # the plugins also check the Will
        except Exception:  # a login no plugin could judge is refused, and the broker stays up
            log.exception("refused login of %r: the auth plugins failed on it", session.username)
            return int(NOT_AUTHORIZED)
        if not authenticated:
            return int(NOT_AUTHORIZED)
        if self._rules.acl is not None and not owns_client_id(session.username, session.client_id):
            log.warning("refused login of %r with client id %r: not its own", session.username, session.client_id)
            return int(IDENTIFIER_REJECTED)
        return None

    async def _take_over(self, client_id: str) -> None:
        """Fix 5: close the connection that holds `client_id` and wait until it has ended."""
        held = self._sessions.get(client_id)
        if held is None or not held[0].transitions.is_connected():
            return
        old_session, old_handler = held
        log.info("client %r connected again: closing its previous connection", client_id)
        connection = self._connections.get(old_handler.writer) if old_handler.writer is not None else None
        await old_handler.handle_connection_closed()
        if connection is not None and connection is not asyncio.current_task():
            await asyncio.wait({connection}, timeout=TAKEOVER_WAIT_S)
        if old_session.transitions.is_connected():  # its message loop did not end: stop it as amqtt does
            await self._stop_handler(old_handler)
            old_session.transitions.disconnect()

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        message = wait_deliver.result()
        if isinstance(message, ApplicationMessage) and self._refuses_retained(client_session, message):
            return True  # dropped, as amqtt drops a PUBLISH its ACL refuses; the client stays
        return bool(await super()._handle_message_delivery(client_session, handler, wait_deliver))

    def _refuses_retained(self, session: Session, message: ApplicationMessage) -> bool:
        """Fix 8: True for a retained PUBLISH the ACL's `retain` filters do not allow."""
        acl, topic = self._rules.acl, message.topic
        packet = message.publish_packet
        if acl is None or packet is None or not packet.retain_flag:
            return False
        if not topic or topic.startswith("$") or "+" in topic or "#" in topic:
            return False  # amqtt closes the connection for these
        if acl.may_publish(session.username, topic, retain=True):
            return False
        log.warning("denied retained publish of %r on %r", session.username, topic)
        return True

    def _holds(self, session: Session, topic_filter: str) -> bool:
        subscribers = self._subscriptions.get(topic_filter, ())
        return any(sub.client_id == session.client_id for sub, _qos in subscribers)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        if not self._holds(session, subscription[0]):
            return  # fix 1: another client's filter
        await super()._publish_retained_messages_for_subscription(subscription, session)

    async def _stop_handler(self, handler: BrokerProtocolHandler) -> None:
        reader = handler._reader_task  # private attribute of amqtt's handler: see fix 3
        if reader is not None and reader is not asyncio.current_task():
            await cancel_and_wait(reader, recancel_after=READER_RECANCEL_AFTER_S)
        await super()._stop_handler(handler)


def _resume(stored: Session, incoming: Session) -> Session:
    """A persistent session taken up again with the new CONNECT's Will, keep-alive and credentials.

    amqtt copies all of these but `will_retain`, so a resumed session kept its old Will's flag.
    """
    for name in _RESUMED_FIELDS:
        setattr(stored, name, getattr(incoming, name))
    stored.parent = 1
    return stored


def _peer_text(peer: object) -> str:
    """`host:port` of a socket's peer name, for log lines."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
