"""Clients this project did not write: `mosquitto_pub`, and raw MQTT 3.1.1 packets on a socket."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass

from tests.support.brokers import mosquitto_program

CONNACK_TIMEOUT_S = 10.0


async def mosquitto_pub(port: int, *args: str) -> int:
    """Run `mosquitto_pub` (MQTT 3.1.1, QoS 1) against 127.0.0.1:port; its exit code (0: it connected)."""
    proc = await asyncio.create_subprocess_exec(
        mosquitto_program("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv311", "-q", "1", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 20)


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


@dataclass(frozen=True)
class Will:
    """A Last Will as it travels in CONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def connect_packet(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    clean: bool = True,
    will: Will | None = None,
    keepalive: int = 30,
) -> bytes:
    """A CONNECT packet (MQTT 3.1.1) with exactly the given fields."""
    flags = 0x02 if clean else 0
    payload = mqtt_string(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += mqtt_string(will.topic) + mqtt_string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += mqtt_string(username)
    if password is not None:
        flags |= 0x40
        payload += mqtt_string(password)
    body = mqtt_string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    return bytes([0x10]) + remaining_length(len(body)) + body


def publish_header(topic: str, payload_bytes: int, *, retain: bool = False) -> bytes:
    """The start of a QoS 0 PUBLISH announcing `payload_bytes` of payload (send them after)."""
    variable = mqtt_string(topic)
    return bytes([0x30 | (1 if retain else 0)]) + remaining_length(len(variable) + payload_bytes) + variable


class RawClient:
    """One TCP connection speaking bytes to a broker on 127.0.0.1."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def connack(self, timeout: float = CONNACK_TIMEOUT_S) -> int | None:
        """The CONNACK return code, or None if the broker closed the connection without one."""
        try:
            data = await asyncio.wait_for(self.reader.readexactly(4), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        assert data[0] == 0x20, f"expected CONNACK, got {data!r}"
        return data[3]

    async def closed_by_broker(self, timeout: float) -> bool:
        """True if the broker closes the connection within `timeout` seconds (reading past what it sends)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (left := deadline - loop.time()) > 0:
                if not await asyncio.wait_for(self.reader.read(65536), left):
                    return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def connack_code(port: int, packet: bytes) -> int | None:
    """Send one CONNECT on a fresh connection and return the CONNACK code (None: closed without one)."""
    client = await RawClient.open(port)
    try:
        await client.send(packet)
        return await client.connack()
    finally:
        await client.close()
