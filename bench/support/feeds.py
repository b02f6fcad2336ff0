"""The child processes of `bench/ingest.py`: per-car publishers, and the control room's reader without its app.

Each child writes `<unix time> <count>` lines to stdout (the supervisor's log file) a few times a
second from a thread of its own, so the parent reads counts that are consistent with their times
however busy the child's event loop is.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime

from bench.support.messages import car_offer, car_status
from mqttlink import BrokerUrl, client_id_of, stay_connected
from protocol.codec import encode
from protocol.topics import DELIVERY, Channel, Topics
from tui.app import FleetroomApp
from tui.store import FleetStore

REPORT_EVERY_S = 0.25


def report_counts(count: Callable[[], int], stop: threading.Event) -> threading.Thread:
    """Print `<unix time> <count()>` every REPORT_EVERY_S seconds until `stop` is set."""

    def run() -> None:
        while not stop.wait(REPORT_EVERY_S):
            print(f"{time.time():.3f} {count()}", flush=True)

    thread = threading.Thread(target=run, name="report", daemon=True)
    thread.start()
    return thread


def per_car_stream(topics: Topics, first: int, cars: int, sim_time: datetime) -> list[tuple[str, bytes, int, bool]]:
    """Each car's retained status and its offer, on the car's own topics, with the QoS and retain DELIVERY says."""
    status, offer = DELIVERY[Channel.VEHICLE_STATUS], DELIVERY[Channel.OFFER]
    out = []
    for i in range(first, first + cars):
        vid = f"car-{i:07d}"
        out.append((topics.vehicle_status(vid), encode(car_status(vid, sim_time)), status.qos, status.retain))
        out.append((topics.offer(vid), encode(car_offer(vid, 1, sim_time)), offer.qos, offer.retain))
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _varint(len(body)) + body


def _text(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


def publish_packets(stream: list[tuple[str, bytes, int, bool]]) -> list[bytes]:
    """MQTT 3.1.1 PUBLISH packets for `stream`, packet ids 1..65535 in turn (Mosquitto keeps no state for QoS 1 in)."""
    out = []
    for n, (topic, payload, qos, retain) in enumerate(stream):
        pid = (n % 65535 + 1).to_bytes(2, "big") if qos else b""
        out.append(_packet(0x30 | qos << 1 | int(retain), _text(topic) + pid + payload))
    return out


def publish(url: BrokerUrl, topics: Topics, first: int, cars: int, sim_time: datetime, seconds: float) -> None:
    """Write the stream of `cars` cars round and round for `seconds`, as fast as the broker reads it.

    The packets are encoded once and written straight to the socket (acknowledgements read and
    discarded by a thread), so that a publisher costs about what a C client would and leaves the
    CPU to the readers under test; TCP's flow control paces it at the broker's speed.
    """
    packets = publish_packets(per_car_stream(topics, first, cars, sim_time))
    chunks = [b"".join(packets[i:i + 500]) for i in range(0, len(packets), 500)]
    sock = socket.create_connection((url.host, url.port))
    connect = b"\x00\x04MQTT\x04\x02\x00\x00" + _text(f"bench-pub-{os.getpid()}")  # clean session, no keepalive
    sock.sendall(_packet(0x10, connect))
    if sock.recv(4) != b"\x20\x02\x00\x00":
        sys.exit("the broker refused the publisher's connection")
    threading.Thread(target=_discard, args=(sock,), name="pubacks", daemon=True).start()
    sent, stop = 0, threading.Event()
    report_counts(lambda: sent, stop)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for i, chunk in enumerate(chunks):
                sock.sendall(chunk)
                sent += min(500, len(packets) - i * 500)
                if time.monotonic() >= end:
                    break
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    finally:
        stop.set()
        sock.close()


def _discard(sock: socket.socket) -> None:
    """Read and drop whatever the broker sends (PUBACKs) until the socket closes."""
    try:
        while sock.recv(1 << 20):
            pass
    except OSError:
        return


async def control_room(url: BrokerUrl, topics: Topics) -> None:
    """The control room's MQTT session feeding its `FleetStore`, as `FleetroomApp.run_link` runs it, minus painting."""
    store = FleetStore(topics)
    app = FleetroomApp(url, topics, store=store, connect=False)  # never run: only its reader is used
    stop = threading.Event()
    report_counts(lambda: store.messages, stop)
    try:
        await stay_connected(url, client_id_of(url, "observer"), app._session, max_queued_incoming=100_000,
                             on_drop=app._dropped)
    finally:
        stop.set()


def child_main(role: str, argv: list[str]) -> None:
    """Run one child: `publish URL PREFIX FIRST CARS SIM_ISO SECONDS` or `control-room URL PREFIX`."""
    url = BrokerUrl("127.0.0.1", int(argv[0]))
    topics = Topics(argv[1])
    if role == "publish":
        first, cars, sim, seconds = int(argv[2]), int(argv[3]), datetime.fromisoformat(argv[4]), float(argv[5])
        publish(url, topics, first, cars, sim, seconds)
    elif role == "control-room":
        asyncio.run(control_room(url, topics))
    else:
        sys.exit(f"unknown child role {role}")
