"""Wall seconds until the dispatcher knows a million real cars, with the stack of `fleetroom demo --scenario essay`.

The stack: Mosquitto, the `fleetroom dispatcher` process and the fleet processes in gateway mode
with the essay's flags (HW5 cars, telemetry every 600 simulated seconds, the demo's clock); the
demo's job driver is left out, so that the figure is the control plane taking in the fleet. The
clock runs from launching the dispatcher and the fleets until the dispatcher's retained summary
says `cars_known` >= the target (interpolated between its once-a-second summaries).

The reference, measured first in the same run on a fresh Mosquitto: the same fleet processes
alone, from launch until their retained gateway statuses say every car joined (`vehicle_count`,
sent every 5 s and interpolated the same way). Peak RSS of each stack is the sum over its
processes, sampled from /proc twice a second.
Run: python bench/essay_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support.stack import (
    FleetMetrics,
    PeakRss,
    TopicWatch,
    essay_fleet_flags,
    reached_at,
    start_mosquitto,
    stop_on_signals,
    supervisor,
)
from fleetroom.common import clock_flags
from fleetroom.compose.essay import fleet_processes
from fleetroom.compose.stack import free_port
from fleetroom.compose.supervisor import Supervisor, fleetroom_command
from mqttlink import BrokerUrl
from protocol.codec import decode
from protocol.fleet_messages import FleetSummary
from protocol.topics import Topics

PREFIX = "essay"
SPEED = 60.0  # the demo's default
PROGRESS_EVERY_S = 5.0

Samples = Callable[[], list[tuple[float, int]]]


class Outcome(NamedTuple):
    """Seconds from launch until the fleet joined and the dispatcher knew every car (None: not in time)."""

    fleet_s: float | None
    dispatcher_s: float | None
    cars_seen: int  # at the end, by the last of the two measured
    peak_rss: int  # bytes, summed over the stack's processes


def known(watch: TopicWatch) -> list[tuple[float, int]]:
    """(sent_at, cars_known) of each dispatcher summary."""
    out = []
    for _, _, payload in watch.since(0):
        summary = decode(payload)
        if isinstance(summary, FleetSummary):
            out.append((summary.sent_at.timestamp(), summary.cars_known))
    return out


def wait_for_cars(sup: Supervisor, samples: Samples, target: int, started: float, timeout: float,
                  what: str) -> float | None:
    """Seconds from `started` until `samples` reach `target` cars, printing progress; None after `timeout`."""
    last_print = started
    while time.time() - started < timeout:
        sup.check()
        seen = samples()
        at = reached_at(seen, target)
        if at is not None:
            return at - started
        now = time.time()
        if now - last_print >= PROGRESS_EVERY_S:
            last_print = now
            t, count = seen[-1] if seen else (now, 0)
            print(f"  {what}: {now - started:5.1f} s, {count:,} cars, {count / max(1e-9, t - started):,.0f} cars/s "
                  "since start", file=sys.stderr, flush=True)
        time.sleep(0.2)
    return None


def start_fleets(sup: Supervisor, url: BrokerUrl, args: argparse.Namespace, clock: list[str]) -> FleetMetrics:
    """The fleet processes, each serving /metrics on a free port (read a few times a second)."""
    ports = [free_port() for _ in range(args.fleet_processes)]
    for k, port in enumerate(ports):
        sup.start(f"fleet-{k}", fleetroom_command(
            "vehicles", "--broker", str(url), "--topic-prefix", PREFIX, "--metrics-port", str(port),
            *essay_fleet_flags(args.cars, args.fleet_processes, k, clock, SPEED)))
    return FleetMetrics(ports)


def run_stack(run_dir: Path, args: argparse.Namespace, with_dispatcher: bool, timeout: float) -> Outcome:
    """One stack from launch until `args.cars` cars: the fleet's join and, with the dispatcher, its count."""
    topics = Topics(PREFIX)
    with supervisor(run_dir) as sup:
        url = start_mosquitto(sup)
        watch = TopicWatch(url, [topics.summary], f"bench-essay-{os.getpid()}")
        rss = PeakRss(sup)
        fleets: FleetMetrics | None = None
        try:
            sim_start = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
            started = time.time()
            clock = clock_flags(SPEED, sim_start, started)
            if with_dispatcher:
                sup.start("dispatcher", fleetroom_command(
                    "dispatcher", "--broker", str(url), "--topic-prefix", PREFIX, "--db",
                    str(sup.run_dir / "ledger.sqlite3"), *clock, "--summary-interval", "1"))
            fleets = start_fleets(sup, url, args, clock)
            joined: Samples = partial(list, fleets.samples)
            fleet_s = wait_for_cars(sup, joined, args.cars, started, timeout, "fleet, joined")
            dispatcher_s, seen = None, joined()
            if with_dispatcher:
                dispatcher_s = wait_for_cars(sup, partial(known, watch), args.cars, started, timeout,
                                             "dispatcher, knows")
                seen = known(watch)
            return Outcome(fleet_s, dispatcher_s, seen[-1][1] if seen else 0, rss.close())
        finally:
            if fleets is not None:
                fleets.close()
            rss.close()
            watch.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 cars instead of 1,000,000")
    parser.add_argument("--cars", type=int, help="cars to reach (default: 1,000,000; --quick: 200,000)")
    parser.add_argument("--fleet-processes", type=int, help="fleet processes sharing the cars (default: the demo's, "
                        "2 for a million, else 1)")
    parser.add_argument("--timeout", type=float, help="give up on the stack after so many seconds "
                        "(default: 5 x the fleet-only join, at least 60)")
    parser.add_argument("--logs", type=Path, help="keep every process's log in this directory (default: a temp one)")
    args = parser.parse_args()
    args.cars = args.cars or (200_000 if args.quick else 1_000_000)
    args.fleet_processes = fleet_processes(args.fleet_processes, args.cars)
    if args.cars < 1 or args.fleet_processes < 1:
        print("bench/essay_scale.py: --cars and --fleet-processes must be at least 1", file=sys.stderr)
        return 2
    stop_on_signals()
    with tempfile.TemporaryDirectory(prefix="bench-essay-") as tmp_dir:
        tmp = args.logs or tmp_dir
        alone = run_stack(Path(tmp) / "fleet", args, False, args.timeout or 600)
        ref = alone.fleet_s
        if ref is None:
            print(f"essay_scale: the fleet alone did not join {args.cars:,} cars ({alone.cars_seen:,} joined)")
            return 1
        print(f"fleet alone ({args.fleet_processes} process(es), gateway mode, Mosquitto): {args.cars:,} cars joined "
              f"in {ref:.1f} s ({args.cars / ref:,.0f} cars/s); peak RSS {alone.peak_rss / 2**30:.2f} GiB", flush=True)
        timeout = args.timeout or max(60.0, 5 * ref)
        stack = run_stack(Path(tmp) / "stack", args, True, timeout)
    joined = "not in time" if stack.fleet_s is None else f"{stack.fleet_s:.1f} s"
    print(f"stack (Mosquitto, dispatcher, {args.fleet_processes} fleet process(es)): fleet joined {joined}; "
          f"peak RSS of the stack {stack.peak_rss / 2**30:.2f} GiB", flush=True)
    if stack.dispatcher_s is None:
        print(f"essay_scale: >{timeout:.0f} s to {args.cars:,} cars (the dispatcher knew {stack.cars_seen:,}); "
              f"ratio >{timeout / ref:.2f} vs fleet-only join ({ref:.1f} s)")
        return 0  # measured: a lower bound, and the target missed; `make bench` goes on to the next bench
    print(f"essay_scale: {stack.dispatcher_s:.1f} s to {args.cars:,} cars; ratio {stack.dispatcher_s / ref:.2f} vs "
          f"fleet-only join ({ref:.1f} s)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
