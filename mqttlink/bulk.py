"""A lean asyncio MQTT 3.1.1 client for reading at the broker's pace: whole batches, no await per message.

aiomqtt hands over one message per `await` through paho's byte-by-byte reads, which caps a
reader near 20k msg/s. `BulkLink` sits on an asyncio Protocol instead: each chunk the socket
delivers is cut into packets at once (`mqttlink.packets`), its publishes join the inbox that
`batches()` empties in one go, and its QoS 1 acknowledgements leave in one write. When more
than `max_buffered` messages wait unread, the link stops reading the socket, so TCP makes the
broker wait rather than anything being dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import NamedTuple

from mqttlink import packets
from mqttlink.backoff import Backoff
from mqttlink.client import BrokerUnreachable, LinkEvent, LinkState, describe_error
from mqttlink.packets import MalformedPacket, Packet, Received, WillMessage, WillSpec, will_spec

__all__ = ["BulkLink", "BulkLinkError", "Outgoing", "Received", "WillSpec", "stay_connected_bulk"]
from mqttlink.tls import shared_client_ssl_context, silent_close_hint
from mqttlink.url import BrokerUrl

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFERED = 500_000
_CONNACK_REFUSALS = {1: "unacceptable protocol version", 2: "client identifier rejected",
                     3: "server unavailable", 4: "bad user name or password", 5: "not authorised"}


class BulkLinkError(ConnectionError):
    """The link to the broker was lost or broke the protocol; reconnect to go on."""


class Outgoing(NamedTuple):
    """A QoS 1 message this link published and the broker has not acknowledged yet."""

    topic: str
    payload: bytes
    retain: bool


class _Wire(asyncio.Protocol):
    """Hands the transport's events to its link."""

    def __init__(self, link: BulkLink) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.link._transport = transport

    def data_received(self, data: bytes) -> None:
        self.link._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._on_lost(exc)


class BulkLink:
    """One MQTT 3.1.1 connection built for reading in bulk; use `async with` or `connect`/`close`."""

    def __init__(self, url: BrokerUrl, client_id: str, *, will: WillMessage | None = None, keepalive: int = 30,
                 max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        self.url, self.client_id, self.keepalive, self.max_buffered = url, client_id, keepalive, max_buffered
        self.will = None if will is None else will_spec(will)
        self.pings_answered = 0
        self.paused_count = 0  # how many times reading stopped to let the reader catch up
        self._parser = packets.StreamParser()
        self._transport: asyncio.Transport | None = None
        self._inbox: list[Received] = []
        self._wakeup = asyncio.Event()
        self._acked = asyncio.Event()  # set whenever a PUBACK arrives (or the link ends)
        self._waiting: dict[int, asyncio.Future[bytes]] = {}  # SUBACK and UNSUBACK by packet id
        self._unacked: dict[int, Outgoing] = {}
        self._connack: asyncio.Future[bytes] | None = None
        self._gone: asyncio.Future[None] | None = None
        self._error: BulkLinkError | None = None
        self._closing = self._paused = False
        self._next_id = 0
        self._ping_sent: float | None = None
        self._heard_at = 0.0  # when the broker last sent anything: a PINGRESP may wait behind a backlog of data
        self._ping_timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> BulkLink:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._error is None and not self._closing

    @property
    def buffered(self) -> int:
        """Messages received and not yet taken by `batches()`."""
        return len(self._inbox)

    @property
    def unacked(self) -> list[Outgoing]:
        """QoS 1 publishes not acknowledged, in the order sent: after a lost link, what to send again."""
        return list(self._unacked.values())

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect and log in; `BrokerUnreachable` with one line if the broker cannot be used."""
        loop = asyncio.get_running_loop()
        url = self.url
        self._connack, self._gone = loop.create_future(), loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                ssl = shared_client_ssl_context(url) if url.tls else None
                await loop.create_connection(lambda: _Wire(self), url.host, url.port, ssl=ssl)
                self._write(packets.connect_packet(
                    self.client_id, username=url.username, password=url.password, will=self.will,
                    keepalive=self.keepalive))
                answer = await self._connack
        except TimeoutError:
            self._drop_transport()
            raise BrokerUnreachable(f"the MQTT broker at {url} did not accept the connection within "
                                    f"{timeout:g} s{silent_close_hint(url)}") from None
        except BulkLinkError:  # closed before CONNACK: a broker that refuses without a word, or a TLS mismatch
            self._drop_transport()
            who = self.url.username or "anonymous"
            raise BrokerUnreachable(f"the MQTT broker at {url} closed the connection before accepting the login "
                                    f"of {who!r}{silent_close_hint(url)}") from None
        except OSError as exc:  # refused, unknown host, TLS failure
            self._drop_transport()
            wrapped = BulkLinkError(str(exc) or type(exc).__name__)
            wrapped.__cause__ = exc
            raise BrokerUnreachable(describe_error(url, wrapped)) from None
        code = answer[1] if len(answer) == 2 else -1
        if code != 0:
            self._drop_transport()
            raise BrokerUnreachable(self._refusal(code))
        self._schedule_ping()

    def _refusal(self, code: int) -> str:
        """One line for a CONNACK that refused the connection."""
        why = _CONNACK_REFUSALS.get(code, f"malformed CONNACK (code {code})")
        if code in (4, 5):
            return f"the MQTT broker at {self.url} refused the login of {self.url.username or 'anonymous'!r}: " \
                   f"{why} (CONNACK code {code})"
        return f"the MQTT broker at {self.url} refused the connection: {why} (CONNACK code {code})"

    async def subscribe(self, filters: Sequence[tuple[str, int]], timeout: float = 10.0) -> list[int]:
        """Subscribe to (filter, QoS) pairs in one packet; the QoS granted to each."""
        packet_id = self._packet_id()
        codes = await self._exchange(packet_id, packets.subscribe_packet(packet_id, filters), timeout)
        granted = list(codes[2:])
        if len(granted) != len(filters):
            self._fail(BulkLinkError(f"a SUBACK for {len(granted)} filters answered {len(filters)}"))
            raise self._error or BulkLinkError("lost")
        for (topic_filter, _), code in zip(filters, granted, strict=True):
            if code == 0x80:
                raise BulkLinkError(f"the MQTT broker at {self.url} refused the subscription to {topic_filter!r}")
        return granted

    async def unsubscribe(self, filters: Sequence[str], timeout: float = 10.0) -> None:
        """Unsubscribe from `filters` in one packet, once the broker has confirmed it."""
        packet_id = self._packet_id()
        await self._exchange(packet_id, packets.unsubscribe_packet(packet_id, filters), timeout)

    async def _exchange(self, packet_id: int, packet: bytes, timeout: float) -> bytes:
        """Send `packet` and wait for the acknowledgement with the same packet id."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[packet_id] = future
        self._write(packet)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise BulkLinkError(f"the MQTT broker at {self.url} did not answer within {timeout:g} s") from None
        finally:
            self._waiting.pop(packet_id, None)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Send one message (QoS 0 or 1) without waiting; a QoS 1 one stays in `unacked` until its PUBACK."""
        if qos not in (0, 1):
            raise ValueError(f"BulkLink publishes at QoS 0 or 1, not {qos}")
        packet_id = 0
        if qos:
            packet_id = self._packet_id()
            self._unacked[packet_id] = Outgoing(topic, payload, retain)
        self._write(packets.publish_packet(topic, payload, qos, retain, packet_id))

    async def wait_acknowledged(self, below: int = 1) -> None:
        """Wait until fewer than `below` QoS 1 publishes await their PUBACK; `BulkLinkError` if the link ends first."""
        while len(self._unacked) >= below:
            if self._error is not None:
                raise self._error
            if self._closing or self._transport is None:
                raise BulkLinkError(f"the link to the MQTT broker at {self.url} is closed")
            self._acked.clear()
            await self._acked.wait()

    async def batches(self) -> AsyncIterator[list[Received]]:
        """Everything received so far as one list, again and again; ends after `close`, raises when lost.

        What arrived before a lost connection is yielded first, then `BulkLinkError` is raised.
        """
        while True:
            if self._inbox:
                batch, self._inbox = self._inbox, []
                self._resume()
                yield batch
            elif self._error is not None:
                raise self._error
            elif self._closing or self._transport is None:
                return
            else:
                self._wakeup.clear()
                await self._wakeup.wait()

    async def close(self, timeout: float = 5.0) -> None:
        """Say DISCONNECT (so no Will is published) and close; what is still in the inbox stays readable."""
        transport, self._closing = self._transport, True
        self._cancel_ping()
        if transport is not None and not transport.is_closing():
            transport.write(packets.DISCONNECT_PACKET)
            transport.close()
        if self._gone is not None and transport is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._gone)
            except TimeoutError:
                transport.abort()
        self._wakeup.set()

    def abort(self) -> None:
        """Drop the connection at once, as a crash would (the broker then publishes the Will)."""
        if self._transport is not None:
            self._transport.abort()

    # the transport's side ------------------------------------------------------------------------
    def _on_data(self, data: bytes) -> None:
        self._heard_at = time.monotonic()
        try:
            parsed = self._parser.feed(data)
            for packet in parsed.others:
                self._on_packet(packet)
        except MalformedPacket as exc:
            self._fail(BulkLinkError(f"the MQTT broker at {self.url} sent a malformed packet: {exc}"))
            return
        if parsed.messages:
            self._inbox += parsed.messages
            self._wakeup.set()
        if parsed.acks and self._transport is not None:
            self._transport.write(packets.pubacks(parsed.acks))  # one write for the whole chunk
        if len(self._inbox) > self.max_buffered and not self._paused and self._transport is not None:
            self._paused = True
            self.paused_count += 1
            self._transport.pause_reading()

    def _on_packet(self, packet: Packet) -> None:
        kind, body = packet.kind, packet.body
        if kind == packets.PUBACK and len(body) == 2:
            self._unacked.pop(body[0] << 8 | body[1], None)
            self._acked.set()
        elif kind in (packets.SUBACK, packets.UNSUBACK) and len(body) >= 2:
            future = self._waiting.get(body[0] << 8 | body[1])
            if future is not None and not future.done():
                future.set_result(body)
        elif kind == packets.PINGRESP:
            self._ping_sent = None
            self.pings_answered += 1
        elif kind == packets.CONNACK and self._connack is not None and not self._connack.done():
            self._connack.set_result(body)
        else:
            raise MalformedPacket(f"an unexpected packet of type {kind} ({len(body)} bytes)")

    def _on_lost(self, exc: Exception | None) -> None:
        self._cancel_ping()
        if not self._closing and self._error is None:
            why = str(exc) if exc is not None and str(exc) else "closed by the broker"
            self._error = BulkLinkError(f"connection to the MQTT broker at {self.url} lost: {why}")
            self._error.__cause__ = exc
        error = self._error or BulkLinkError(f"connection to the MQTT broker at {self.url} closed")
        for future in (self._connack, *self._waiting.values()):
            if future is not None and not future.done():
                future.set_exception(error)
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        self._wakeup.set()
        self._acked.set()

    def _fail(self, error: BulkLinkError) -> None:
        """End the connection because of `error`, which readers and waiters then see."""
        if self._error is None:
            self._error = error
        if self._transport is not None:
            self._transport.abort()

    # helpers ---------------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._transport is None or self._closing or self._transport.is_closing():
            raise BulkLinkError(f"the link to the MQTT broker at {self.url} is not connected")
        self._transport.write(data)

    def _packet_id(self) -> int:
        """A packet id no exchange or unacknowledged publish is using."""
        for _ in range(0xFFFF):
            self._next_id = self._next_id % 0xFFFF + 1
            if self._next_id not in self._unacked and self._next_id not in self._waiting:
                return self._next_id
        raise BulkLinkError("65535 QoS 1 messages are waiting for the broker's acknowledgement")

    def _drop_transport(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def _resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._ping_sent = None if self._ping_sent is None else time.monotonic()  # it waited behind the data
            self._transport.resume_reading()

    def _schedule_ping(self) -> None:
        if self.keepalive > 0:
            interval = self.keepalive / 2
            self._ping_timer = asyncio.get_running_loop().call_later(interval, self._ping_due)

    def _cancel_ping(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def _ping_due(self) -> None:
        """Every half keepalive a PINGREQ; lost if the broker sent nothing for a keepalive since one went unanswered.

        Data counts as a sign of life (as paho counts any packet in): a reader busy with a backlog of
        frames gets its PINGRESP only after them, and once took that for a dead broker and reconnected.
        A PINGREQ goes out every half keepalive even while one is unanswered, so that the broker hears
        from a client whose publishing waits for acknowledgements stuck behind that same backlog.
        """
        transport = self._transport
        if not self.connected or transport is None or transport.is_closing():
            return
        now = time.monotonic()
        if self._ping_sent is not None and now - max(self._ping_sent, self._heard_at) >= self.keepalive \
                and not self._paused:
            self._fail(BulkLinkError(f"the MQTT broker at {self.url} did not answer a ping within "
                                     f"{self.keepalive} s"))
            return
        if self._ping_sent is None:
            self._ping_sent = now
        transport.write(packets.PINGREQ_PACKET)
        self._schedule_ping()


BulkSession = Callable[[BulkLink], Awaitable[None]]


async def stay_connected_bulk(
    url: BrokerUrl, client_id: str, session: BulkSession, *, will: WillMessage | None = None,
    on_state: Callable[[LinkEvent], None] | None = None, backoff: Backoff | None = None,
    must_connect_first: bool = True, keepalive: int = 30, max_buffered: int = DEFAULT_MAX_BUFFERED,
) -> None:
    """Run `session` on a connected `BulkLink` until it returns, reconnecting whenever the link is lost.

    As `stay_connected`: with `must_connect_first`, a failure of the first attempt raises
    `BrokerUnreachable`; later losses are retried with backoff and jitter, a fresh link each time.
    """
    backoff = backoff or Backoff()
    notify = on_state or (lambda event: None)
    connected_once = False
    notify(LinkEvent(LinkState.CONNECTING))
    while True:
        link = BulkLink(url, client_id, will=will, keepalive=keepalive, max_buffered=max_buffered)
        try:
            await link.connect()
            connected_once = True
            backoff.reset()
            notify(LinkEvent(LinkState.CONNECTED))
            try:
                await session(link)
            finally:
                await link.close()
            notify(LinkEvent(LinkState.CLOSED))
            return
        except (BrokerUnreachable, OSError) as exc:
            if not connected_once and must_connect_first:
                raise BrokerUnreachable(str(exc)) from None
            reason, delay = str(exc), backoff.next_delay()
            log.info("%s: connection lost (%s); retrying in %.1fs", client_id, reason, delay)
            notify(LinkEvent(LinkState.RECONNECTING, reason, backoff.attempt))
            await asyncio.sleep(delay)
