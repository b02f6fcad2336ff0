"""The child processes of `bench/ingest.py`: per-car publishers, and the control room's reader without its app.

Each child writes `<unix time> <count>` lines to stdout (the supervisor's log file) a few times a
second from a thread of its own, so the parent reads counts that are consistent with their times
however busy the child's event loop is.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime

from bench.support.messages import car_offer, car_status
from mqttlink import BrokerUrl
from protocol import ComputeOffer, HardwareGeneration, Liveness, OfferWithdrawal, utc_now
from protocol.codec import encode
from protocol.frames import OFFER_FRAME_MAX, ROSTER_BLOCK, CarRoster, OfferFrame, RosterEntry, roster_blocks
from protocol.topics import DELIVERY, Channel, Topics
from tui.feed import run_feed
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


def frame_stream(topics: Topics, gateway: str, first: int, cars: int,
                 sim_time: datetime) -> list[tuple[str, bytes, int, bool]]:
    """What a gateway says for `cars` cars in frames: every block's retained roster, then offer frames of them all."""
    roster, frame = DELIVERY[Channel.ROSTER], DELIVERY[Channel.OFFER_FRAME]
    vids = [f"car-{i:07d}" for i in range(first, first + cars)]
    out = []
    for block, start in enumerate(range(0, cars, ROSTER_BLOCK)):
        entries = [RosterEntry(vehicle_id=vid, state=Liveness.ONLINE, hardware=HardwareGeneration.HW5)
                   for vid in vids[start:start + ROSTER_BLOCK]]
        message = CarRoster(sender=gateway, sent_at=utc_now(), sim_time=sim_time, block=block, cars=entries)
        out.append((topics.roster(gateway, block), encode(message), roster.qos, roster.retain))
    for start in range(0, cars, OFFER_FRAME_MAX):  # seq 0 here: see `renumbered`
        offers: list[ComputeOffer | OfferWithdrawal] = [car_offer(vid, 1, sim_time)
                                                        for vid in vids[start:start + OFFER_FRAME_MAX]]
        offer_frame = OfferFrame(sender=gateway, sent_at=utc_now(), sim_time=sim_time, seq=0, offers=offers)
        out.append((topics.offer_frames(gateway), encode(offer_frame), frame.qos, frame.retain))
    return out


def cars_per_frame(cars: int) -> float:
    """Cars named per message, on average, in `frame_stream` of `cars` cars (rosters and offer frames)."""
    return 2 * cars / (roster_blocks(cars) + -(-cars // OFFER_FRAME_MAX))


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


def renumbered(stream: list[tuple[str, bytes, int, bool]]) -> Callable[[int], list[bytes]]:
    """The stream's packets for its `cycle`-th round: offer frames get fresh sequence numbers, the rest is as built."""
    packets = publish_packets(stream)
    frames = [(i, stream[i][1].split(b'"seq":0', 1)) for i, (topic, *_) in enumerate(stream)
              if topic.endswith("/offers")]
    if not frames:
        chunks = [b"".join(packets[i:i + 500]) for i in range(0, len(packets), 500)]
        return lambda cycle: chunks

    def cycle_packets(cycle: int) -> list[bytes]:
        for j, (i, (head, tail)) in enumerate(frames):
            topic, _, qos, retain = stream[i]
            payload = b'%s"seq":%d%s' % (head, cycle * len(frames) + j, tail)
            packets[i] = publish_packets([(topic, payload, qos, retain)])[0]
        return packets

    return cycle_packets


def publish(url: BrokerUrl, topics: Topics, first: int, cars: int, sim_time: datetime, seconds: float,
            frames: bool) -> None:
    """Write the stream of `cars` cars round and round for `seconds`, as fast as the broker reads it.

    The packets are encoded once and written straight to the socket (acknowledgements read and
    discarded by a thread), so that a publisher costs about what a C client would and leaves the
    CPU to the readers under test; TCP's flow control paces it at the broker's speed.
    """
    stream = (frame_stream(topics, f"gw-bench-{first}", first, cars, sim_time) if frames
              else per_car_stream(topics, first, cars, sim_time))
    per_cycle = renumbered(stream)
    per_write = 1 if frames else 500  # a frame is big enough to write alone
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
        for cycle in itertools.count():
            for i, data in enumerate(per_cycle(cycle)):
                sock.sendall(data)
                sent += min(per_write, len(stream) - i * per_write)
                if time.monotonic() >= end:
                    break
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
    """The control room's own feed (`tui.feed.run_feed`, what its MQTT worker runs) filling a `FleetStore`, headless."""
    store = FleetStore(topics)
    stop = threading.Event()
    report_counts(lambda: store.messages, stop)
    try:
        await run_feed(url, store, must_connect_first=True)
    finally:
        stop.set()


def child_main(role: str, argv: list[str]) -> None:
    """Run one child: `publish|publish-frames PORT PREFIX FIRST CARS SIM_ISO SECONDS` or `control-room PORT PREFIX`."""
    url = BrokerUrl("127.0.0.1", int(argv[0]))
    topics = Topics(argv[1])
    if role in ("publish", "publish-frames"):
        first, cars, sim, seconds = int(argv[2]), int(argv[3]), datetime.fromisoformat(argv[4]), float(argv[5])
        publish(url, topics, first, cars, sim, seconds, frames=role == "publish-frames")
    elif role == "control-room":
        asyncio.run(control_room(url, topics))
    else:
        sys.exit(f"unknown child role {role}")
