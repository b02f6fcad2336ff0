"""Messages a second the dispatcher and the control room each take from Mosquitto, against `mosquitto_sub`.

Publisher processes send what a per-car fleet sends -- each car's retained status and its compute
offer on the car's own topics, QoS 1 as `protocol.topics.DELIVERY` says, payloads built from the
protocol models for many distinct cars -- as fast as the broker acknowledges them. Three readers
take the same stream at the same time, each in its own process:

- `mosquitto_sub` (a C client) with the same two filters, printing one byte per message;
- the real `fleetroom dispatcher` (its service's reader and `Engine.handle`, a temp SQLite ledger),
  counted by the `messages_received` of its own retained summaries;
- the control room's real reader feeding a `FleetStore` (no Textual app is run), counted by the
  store's own message count.

After a warm-up, each reader's rate is what it HANDLED over the same window. The machine is shared
by every process here (two cores on the CI box), as it is in the demo.

First (unless --no-frames) the same is measured on a fresh broker with what a gateway sends in
frames (`protocol.frames`: every block's retained `CarRoster`, then `OfferFrame`s, one gateway per
publisher), printed as frames/s and as cars/s; the last line is the per-car run's.
Run: python bench/ingest.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support.feeds import cars_per_frame, child_main
from bench.support.stack import TopicWatch, rate_over, start_mosquitto, stop_on_signals, supervisor
from fleetroom.common import clock_flags
from fleetroom.compose.supervisor import Supervisor, fleetroom_command, wait_for
from mqttlink import BrokerUrl
from protocol.codec import decode
from protocol.fleet_messages import FleetSummary
from protocol.topics import Channel, Topics

PREFIX = "bench"
MOSQUITTO_SUB = "mosquitto_sub"
COUNT_LINE = re.compile(rb"^(\d+\.\d+) (\d+)$", re.MULTILINE)
DROPPED = "$SYS/broker/publish/messages/dropped"


def log_counts(path: Path) -> list[tuple[float, int]]:
    """The `<unix time> <count>` lines a child wrote to its log."""
    return [(float(t), int(c)) for t, c in COUNT_LINE.findall(path.read_bytes())]


def summary_counts(watch: TopicWatch) -> list[tuple[float, int]]:
    """(sent_at, messages_received) of every dispatcher summary seen."""
    out = []
    for _, topic, payload in watch.since(0):
        if topic == DROPPED:
            continue
        message = decode(payload)
        if isinstance(message, FleetSummary):
            out.append((message.sent_at.timestamp(), message.messages_received))
    return out


class Rates(NamedTuple):
    """Messages a second over the window: written by the publishers, handled by each reader."""

    published: float
    mosquitto_sub: float
    dispatcher: float
    control_room: float
    dropped: int  # by Mosquitto for readers whose queue was full, over the whole run


def start_readers(sup: Supervisor, url: BrokerUrl, topics: Topics, frames: bool, clock: list[str]) -> Path:
    """mosquitto_sub, the dispatcher and the control room's reader; returns the file mosquitto_sub writes to."""
    filters = ([topics.all_rosters, topics.all_offer_frames] if frames
               else [topics.all_vehicles(Channel.VEHICLE_STATUS), topics.all_vehicles(Channel.OFFER)])
    # one byte per message, no newline, into the supervisor's log of it: the growth of the file is the count
    sub = sup.start(MOSQUITTO_SUB, [MOSQUITTO_SUB, "-h", url.host, "-p", str(url.port), "-q", "1", "-N", "-F", ".",
                                    *[a for f in filters for a in ("-t", f)]])
    sup.start("dispatcher", fleetroom_command(
        "dispatcher", "--broker", str(url), "--topic-prefix", PREFIX, "--db", str(sup.run_dir / "ledger.sqlite3"),
        *clock, "--summary-interval", "0.5", "--heartbeat-timeout", "3600",
    ))
    sup.start("control-room", [sys.executable, __file__, "--_child", "control-room", str(url.port), PREFIX])
    return sub.log_path


def measure(args: argparse.Namespace, sup: Supervisor, frames: bool) -> Rates:
    """One stream (per-car topics, or gateway frames) read by the three readers at once."""
    warmup, window = (4.0, 8.0) if args.quick else (10.0, 30.0)
    url = start_mosquitto(sup)
    topics = Topics(PREFIX)
    sim_start = datetime.now(UTC).replace(microsecond=0)
    watch = TopicWatch(url, [topics.summary, DROPPED], f"bench-watch-{os.getpid()}")
    sub_out = start_readers(sup, url, topics, frames, clock_flags(1.0, sim_start, time.time()))
    room_log = sup.children["control-room"].log_path
    wait_for(lambda: len(summary_counts(watch)) > 0, 30, "the dispatcher's first summary", sup)
    wait_for(lambda: any(c > 0 for _, c in log_counts(room_log)), 30, "the control room's reader", sup)
    per = args.cars // args.publishers
    role = "publish-frames" if frames else "publish"
    for k in range(args.publishers):
        sup.start(f"publisher-{k}", [sys.executable, __file__, "--_child", role, str(url.port), PREFIX,
                                     str(k * per), str(per), sim_start.isoformat(), str(warmup + window + 5)])
    publisher_logs = [sup.children[f"publisher-{k}"].log_path for k in range(args.publishers)]
    # building the payloads takes a few seconds: the warm-up starts when every publisher is writing
    wait_for(lambda: all(any(c > 0 for _, c in log_counts(p)) for p in publisher_logs), 120,
             "the publishers to start", sup)
    sub_sizes: list[tuple[float, int]] = []
    start = time.time() + warmup
    end = start + window
    print(f"ingest ({'gateway frames' if frames else 'per-car topics'}): {args.publishers} publishers, "
          f"{per * args.publishers:,} cars; warm-up {warmup:.0f} s, window {window:.0f} s", file=sys.stderr, flush=True)
    while time.time() < end + 1.0:
        sup.check()
        sub_sizes.append((time.time(), sub_out.stat().st_size))
        time.sleep(0.25)
    dropped = [int(p) for _, t, p in watch.since(0) if t == DROPPED]
    rates = Rates(
        published=sum(rate_over(log_counts(p), start, end) for p in publisher_logs),
        mosquitto_sub=rate_over(sub_sizes, start, end), dispatcher=rate_over(summary_counts(watch), start, end),
        control_room=rate_over(log_counts(room_log), start, end), dropped=dropped[-1] if dropped else 0,
    )
    watch.close()
    return rates


def describe(r: Rates, unit: str = "msg/s", scale: float = 1.0) -> str:
    """The run's rates in words; a reader faster than mosquitto_sub is said to drain what the warm-up left it."""
    draining = [name for name, rate in (("dispatcher", r.dispatcher), ("control room", r.control_room))
                if rate > 1.05 * r.mosquitto_sub]
    note = f" ({' and '.join(draining)} draining a backlog from the warm-up)" if draining else ""
    return (f"published {r.published * scale:,.0f} {unit}; taken by mosquitto_sub {r.mosquitto_sub * scale:,.0f}, "
            f"dispatcher {r.dispatcher * scale:,.0f}, control room {r.control_room * scale:,.0f} {unit}{note}; "
            f"Mosquitto dropped {r.dropped:,} messages for readers behind")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter warm-up and window (about 30 s in all)")
    parser.add_argument("--cars", type=int, default=200_000, help="distinct cars in the stream (default: 200,000)")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes (default: 2)")
    parser.add_argument("--no-frames", action="store_true", help="skip the run with gateway frames")
    parser.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child_main(args._child[0], args._child[1:])
        return 0
    if args.cars < args.publishers or args.publishers < 1:
        print("bench/ingest.py: --cars must be at least --publishers, which must be at least 1", file=sys.stderr)
        return 2
    stop_on_signals()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        if not args.no_frames:
            with supervisor(Path(tmp) / "frames") as sup:
                framed = measure(args, sup, frames=True)
            per_frame = cars_per_frame(args.cars // args.publishers)
            print(f"gateway frames ({per_frame:.0f} cars a message on average): {describe(framed)}", flush=True)
            print(f"gateway frames, as cars: {describe(framed, 'cars/s', per_frame)}", flush=True)
        with supervisor(Path(tmp) / "per-car") as sup:
            r = measure(args, sup, frames=False)
    print(f"per-car topics: {describe(r)}", flush=True)
    print(f"ingest: {r.dispatcher:,.0f} msg/s dispatcher, {r.control_room:,.0f} msg/s control room; ratio "
          f"{min(r.dispatcher, r.control_room) / r.mosquitto_sub:.2f} vs mosquitto_sub ({r.mosquitto_sub:,.0f} msg/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
