"""Run the dispatcher: fleet registry, job ledger (SQLite), matchmaking, recovery and earnings.

It logs in as `dispatcher`, keeps its ledger in --db (default .fleetroom/ledger.sqlite) so a
restart resumes every job, publishes a retained FleetSummary once a second, and prints a
short status line to stderr every few seconds. With --metrics-port it serves that summary at
/metrics for Prometheus. SIGINT or SIGTERM stop it cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fleetroom.common import (
    DEFAULT_LEDGER,
    MAX_CARS,
    SIM_EPOCH_HELP,
    SPEED,
    WALL_S,
    CliError,
    add_broker_arguments,
    broker_for,
    finite,
    run_async,
    setup_logging,
    sim_epoch,
    topics_from,
    whole,
)
from fleetroom.metrics_flags import add_metrics_arguments
from mqttlink import BrokerUnreachable, cancel_and_wait
from protocol.clock import SimClock
from protocol.fleet_messages import FleetSummary, MatchPolicy, money_text
from protocol.topics import Topics

if TYPE_CHECKING:
    from dispatcher.engine import Engine
    from dispatcher.ledger import Ledger
    from dispatcher.service import DispatcherService

STATUS_EVERY_S = 5.0
MAX_ENERGY_PRICE = 1e6  # per kWh


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date-time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. 2026-01-01T08:00:00+00:00")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument("--db", type=Path, default=DEFAULT_LEDGER,
                        help="SQLite ledger file (default: %(default)s)")
    parser.add_argument("--policy", choices=[p.value for p in MatchPolicy], default=MatchPolicy.FASTEST.value,
                        help="matchmaking policy at start; operators may change it at run time (default: %(default)s)")
    parser.add_argument("--speed", type=SPEED, default=60.0,
                        help="simulation seconds per wall second (default: %(default)s)")
    parser.add_argument("--sim-start", type=_instant, help="simulation time origin, ISO 8601 with zone (default: now)")
    parser.add_argument("--sim-epoch", type=sim_epoch, metavar="UNIX_SECONDS", help=SIM_EPOCH_HELP)
    parser.add_argument("--summary-interval", type=WALL_S, default=1.0, metavar="WALL_SECONDS",
                        help="seconds between fleet summaries (default: %(default)s)")
    parser.add_argument("--heartbeat-timeout", type=WALL_S, default=60.0, metavar="WALL_SECONDS",
                        help="a car not heard from for this long is offline (default: %(default)s)")
    parser.add_argument("--energy-price", type=finite(0, MAX_ENERGY_PRICE), default=0.15, metavar="PER_KWH",
                        help="electricity price per kWh, for the cars' net earnings (default: %(default)s)")
    parser.add_argument("--spot-check-rate", type=finite(0, 1), default=0.1, metavar="FRACTION",
                        help="share of results the dispatcher recomputes and refuses at once if wrong "
                        "(default: %(default)s)")
    parser.add_argument("--duration", type=WALL_S, metavar="WALL_SECONDS", help="stop after this long")
    parser.add_argument("--cars-per-emulated-car", type=whole(1, MAX_CARS), default=1, metavar="K",
                        help="show a fleet at scale: each car heard stands for K cars in the summary's car counts "
                        "and TOPS (labelled as scaled in the summary; jobs and earnings are never scaled)")
    add_metrics_arguments(parser, "the dispatcher")


def status_line(summary: FleetSummary) -> str:
    """One line for stderr: cars, jobs, work and money."""
    cars = summary.cars_by_state
    jobs = summary.jobs_by_status
    return (
        f"dispatcher: {summary.cars_known} cars ({cars.get('online', 0)} online, {cars.get('idle', 0)} idle, "
        f"{cars.get('busy', 0)} busy) | jobs {jobs.get('running', 0)} running, {jobs.get('queued', 0)} queued, "
        f"{jobs.get('done', 0)} done | {summary.shards_completed} shards, {summary.preemptions} preemptions, "
        f"{summary.wrong_results_caught} wrong caught | {money_text(summary)} "
        f"| {summary.messages_per_s:.0f} msg/s, {summary.messages_rejected} rejected | {summary.policy.value}"
    )


async def _serve(args: argparse.Namespace) -> int:
    from dispatcher.ledger import Ledger
    from dispatcher.metrics import MetricsUnavailable
    from dispatcher.service import DispatcherService, ServiceSettings

    url = broker_for(args, "dispatcher")
    topics = topics_from(args)
    try:
        ledger = Ledger(args.db)
    except (sqlite3.Error, OSError) as exc:
        raise CliError(f"cannot open the ledger {args.db}: {exc}") from None
    engine = _engine(args, topics, ledger)
    last_line = [-STATUS_EVERY_S]

    def on_summary(summary: FleetSummary) -> None:
        if time.monotonic() - last_line[0] >= STATUS_EVERY_S:
            last_line[0] = time.monotonic()
            print(status_line(summary), file=sys.stderr, flush=True)

    settings = ServiceSettings(summary_interval_s=args.summary_interval, metrics_port=args.metrics_port,
                               metrics_host=args.metrics_host)
    service = DispatcherService(url, engine, settings, on_summary, on_metrics=_say_metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, service.stop.set)
    failure: BaseException | None = None  # raised after except*, not in it: see DispatcherService._serve
    try:
        async with asyncio.TaskGroup() as group:
            task = group.create_task(service.run())
            group.create_task(_watch(service, task, args.duration))
    except* BrokerUnreachable as failed:
        failure = failed.exceptions[0]
    except* MetricsUnavailable as failed:
        failure = CliError(str(failed.exceptions[0]))
    else:
        print(status_line(engine.summary()), file=sys.stderr)
        for line in earnings_lines(ledger):
            print(line, file=sys.stderr)
    finally:
        ledger.close()
    if failure is not None:
        raise failure from None
    return 0


def _engine(args: argparse.Namespace, topics: Topics, ledger: Ledger) -> Engine:
    from dispatcher.engine import Engine

    clock = SimClock(speed=args.speed, sim_start=args.sim_start, epoch=args.sim_epoch)
    return Engine(
        topics, ledger, sim_now=clock.now, wall=time.monotonic, rng=random.Random(), policy=MatchPolicy(args.policy),
        speed=args.speed, heartbeat_timeout_s=args.heartbeat_timeout, energy_price=args.energy_price,
        cars_per_emulated_car=args.cars_per_emulated_car, spot_check_rate=args.spot_check_rate,
    )


def _say_metrics(url: str) -> None:
    print(f"dispatcher: metrics for Prometheus at {url}", file=sys.stderr, flush=True)


def earnings_lines(ledger: Ledger, top: int = 5) -> list[str]:
    """The owners who earned most, as the earnings report ranks them: gross (compute + robotaxi), energy, net."""
    from dispatcher.ledger import earnings as book

    _, owners = book.counts(ledger.db)
    best = book.owners_money(ledger.db, top)
    lines = [f"earnings: {owners} owners; top {len(best)}:"] if best else []
    for o in best:
        m = o.money
        gross = m.compute_gross + m.robotaxi_gross
        lines.append(f"  {o.owner_id}: {m.compute_tops_hours:,.2f} TOPS-h, gross {gross:.4f} (robotaxi "
                     f"{m.robotaxi_gross:.4f}), energy costing {m.energy_cost:.4f}, net {m.net:.4f}")
    return lines


async def _watch(service: DispatcherService, task: asyncio.Task[None], duration: float | None) -> None:
    """Stop the service after `duration` or on a signal; cancel it if it cannot stop cleanly."""
    try:
        async with asyncio.timeout(duration):
            await service.stop.wait()
    except TimeoutError:
        service.stop.set()
    await asyncio.wait({task}, timeout=5.0)
    if not task.done():
        await cancel_and_wait(task)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    return run_async(_serve(args))
