"""MQTT 3.1.1 packets for the bulk reader: building what a client sends, and cutting a byte stream into packets.

Pure: no I/O, no clock. `StreamParser.feed` takes chunks as the socket delivers them (a packet
may be split across chunks, a chunk may hold thousands of packets) and returns the publishes as
`Received` tuples, the packet ids to acknowledge, and every other packet for the link to handle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

MAX_PACKET_BYTES = 256 * 1024  # what follows a fixed header, at most: the brokers' own packet cap

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

PINGREQ_PACKET = bytes((PINGREQ << 4, 0))
DISCONNECT_PACKET = bytes((DISCONNECT << 4, 0))


class MalformedPacket(ValueError):
    """The stream broke the MQTT 3.1.1 framing; the connection cannot be trusted any more."""


class Received(NamedTuple):
    """One application message as the broker delivered it."""

    topic: str
    payload: bytes
    retain: bool


class Packet(NamedTuple):
    """A control packet other than PUBLISH: its type (the fixed header's high nibble), flags and body."""

    kind: int
    flags: int
    body: bytes


class Parsed(NamedTuple):
    """What one chunk completed: publishes in order, QoS 1 packet ids to acknowledge, other packets."""

    messages: list[Received]
    acks: list[int]
    others: list[Packet]


def varint(value: int) -> bytes:
    """The remaining-length encoding: 7 bits a byte, least significant first, high bit = more."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _text(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise ValueError(f"an MQTT string holds at most 65535 bytes, not {len(raw)}")
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    if len(body) > MAX_PACKET_BYTES:
        raise ValueError(f"a packet of {len(body)} bytes is over the brokers' cap of {MAX_PACKET_BYTES}")
    return bytes((first,)) + varint(len(body)) + body


class WillSpec(NamedTuple):
    """A Last Will as CONNECT carries it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class WillMessage(Protocol):
    """A Last Will: `aiomqtt.Will` or anything else with these attributes."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> object: ...
    @property
    def qos(self) -> int: ...
    @property
    def retain(self) -> bool: ...


def will_spec(will: WillMessage) -> WillSpec:
    """`will` as CONNECT carries it (a text payload in UTF-8)."""
    payload = will.payload
    if isinstance(payload, bytes | bytearray):
        raw = bytes(payload)
    else:
        raw = b"" if payload is None else str(payload).encode()
    return WillSpec(will.topic, raw, will.qos, will.retain)


def connect_packet(client_id: str, *, username: str | None, password: str | None, will: WillSpec | None,
                   keepalive: int, clean_session: bool = True) -> bytes:
    """CONNECT for protocol level 4 (MQTT 3.1.1)."""
    flags = 0x02 if clean_session else 0
    payload = _text(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _text(will.topic) + _text(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _text(username)
        if password is not None:
            flags |= 0x40
            payload += _text(password)
    header = _text("MQTT") + bytes((4, flags)) + keepalive.to_bytes(2, "big")
    return _packet(CONNECT << 4, header + payload)


def subscribe_packet(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    """SUBSCRIBE to every (filter, QoS) in one packet."""
    body = packet_id.to_bytes(2, "big") + b"".join(_text(f) + bytes((qos,)) for f, qos in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def unsubscribe_packet(packet_id: int, filters: Sequence[str]) -> bytes:
    """UNSUBSCRIBE from every filter in one packet."""
    return _packet((UNSUBSCRIBE << 4) | 0x02, packet_id.to_bytes(2, "big") + b"".join(_text(f) for f in filters))


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, packet_id: int = 0, dup: bool = False) -> bytes:
    """PUBLISH at QoS 0 or 1 (with its packet id)."""
    first = (PUBLISH << 4) | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    head = _text(topic) + (packet_id.to_bytes(2, "big") if qos else b"")
    return _packet(first, head + payload)


def pubacks(packet_ids: Sequence[int]) -> bytes:
    """PUBACK for each id, as one buffer for one write."""
    return b"".join(bytes((PUBACK << 4, 2, pid >> 8, pid & 0xFF)) for pid in packet_ids)


class StreamParser:
    """Cuts a byte stream into MQTT packets; keeps an incomplete packet's bytes until the rest arrives."""

    def __init__(self, max_packet_bytes: int = MAX_PACKET_BYTES) -> None:
        self.max_packet_bytes = max_packet_bytes
        self._tail = bytearray()
        self._need = 0  # bytes the tail must reach before parsing it again can complete a packet

    @property
    def pending_bytes(self) -> int:
        """Bytes held of a packet not yet complete."""
        return len(self._tail)

    def feed(self, data: bytes) -> Parsed:
        """Every packet that `data` completes, in stream order; raises `MalformedPacket` on broken framing."""
        parsed = Parsed([], [], [])
        if self._tail:
            self._tail += data
            if len(self._tail) < self._need:
                return parsed
            buffer: bytes | bytearray = self._tail
        else:
            buffer = data
        used = self._parse(buffer, parsed)
        self._tail = bytearray(buffer[used:]) if used < len(buffer) else bytearray()
        if not self._tail:
            self._need = 0
        return parsed

    def _parse(self, buffer: bytes | bytearray, parsed: Parsed) -> int:
        """Parse complete packets from the start of `buffer`; the number of bytes they took."""
        size, pos, cap = len(buffer), 0, self.max_packet_bytes
        view = memoryview(buffer)
        try:
            while pos + 2 <= size:
                start = pos + 1
                length = buffer[start] & 0x7F
                if buffer[start] & 0x80:
                    length, start = self._long_length(buffer, start, size)
                    if length < 0:
                        break
                if length > cap:
                    raise MalformedPacket(f"a packet of {length} bytes is over the cap of {cap}")
                end = start + 1 + length
                if end > size:
                    self._need = end - pos
                    break
                header = buffer[pos]
                if header >> 4 == PUBLISH:
                    _publish(view, buffer, header, start + 1, end, parsed)
                else:
                    parsed.others.append(Packet(header >> 4, header & 0x0F, bytes(view[start + 1:end])))
                pos = end
            else:
                self._need = 2  # a lone first byte waits for its length
        finally:
            view.release()
        return pos

    def _long_length(self, buffer: bytes | bytearray, start: int, size: int) -> tuple[int, int]:
        """A remaining length of 2 to 4 bytes at `start`: (length, index of its last byte), or (-1, _) if cut."""
        length, shift, index = 0, 0, start
        while True:
            if index >= size:
                self._need = index - start + 2  # header byte, the length bytes here, and one more
                return -1, index
            digit = buffer[index]
            length |= (digit & 0x7F) << shift
            if not digit & 0x80:
                return length, index
            shift += 7
            index += 1
            if shift > 21:
                raise MalformedPacket("a remaining length longer than 4 bytes")


def _publish(view: memoryview, buffer: bytes | bytearray, header: int, start: int, end: int, parsed: Parsed) -> None:
    """One PUBLISH body `buffer[start:end]` into `parsed`."""
    qos = (header >> 1) & 0x03
    if qos > 1:
        raise MalformedPacket(f"a PUBLISH at QoS {qos}: this client subscribes at QoS 0 and 1 only")
    topic_end = start + 2 + (buffer[start] << 8 | buffer[start + 1]) if end - start >= 2 else end + 1
    body = topic_end + 2 if qos else topic_end
    if body > end:
        raise MalformedPacket("a PUBLISH shorter than its topic and packet id")
    try:
        topic = str(view[start + 2:topic_end], "utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("a PUBLISH whose topic is not UTF-8") from None
    if qos:
        parsed.acks.append(buffer[topic_end] << 8 | buffer[topic_end + 1])
    parsed.messages.append(Received(topic, bytes(view[body:end]), bool(header & 0x01)))
