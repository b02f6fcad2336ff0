"""The cost of one control-room refresh with 1k, 100k and 1M cars in the store.

A refresh is what the paint timer does: tick the store, rebuild the header, health bar and
state strip text, bring the node order up to date (new cars appended), and render every
visible line of the node table. It runs in a mounted headless app at 160x50, with a few
cars changing between refreshes (their message handling is not timed: it is the worker's
cost, not the paint's). Run: `python bench/tui_refresh.py [--quick]`.

With `--live`, the store is filled by the real ingest instead: for 1k and for 1M cars, a
Mosquitto and a gateway-mode fleet with the essay demo's flags are started, and the control
room runs as it does for an operator (`connect=True`: its own MQTT worker feeding the store);
once the store holds every car (or after `--fill-timeout`), refreshes are timed a paint interval
apart while the fleet's messages keep arriving between them.

Prints, last: `tui_refresh: <ms> ms per refresh at 1M cars; ratio <r> vs 1k cars`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support.messages import summary, telemetry
from bench.support.stack import essay_fleet_flags, start_mosquitto, stop_on_signals, supervisor
from fleetroom.common import clock_flags
from fleetroom.compose.supervisor import fleetroom_command
from mqttlink import BrokerUrl
from protocol import ComputeState, Topics, VehicleTelemetry
from protocol.codec import check_on_topic
from tui.app import FleetroomApp
from tui.nodeview import NodeOrder
from tui.store import FleetStore
from tui.widgets import NodeTable

TOPICS = Topics("bench")
SIZE = (160, 50)
PAINT_INTERVAL_S = 0.25  # the control room's refresh_s: what the worker gets between two paints


def build_store(cars: int) -> FleetStore:
    """A store holding `cars` cars, fed through `apply` (decoding a million payloads is not the point)."""
    store = FleetStore(TOPICS, car_history_limit=0)
    template = telemetry("car-0", ComputeState.IDLE).model_dump()
    states = [ComputeState.IDLE, ComputeState.BUSY, ComputeState.SUSPENDED]
    info = TOPICS.parse(TOPICS.telemetry("car-0"))
    check_on_topic(info, telemetry("car-0", ComputeState.IDLE))
    for i in range(cars):
        fields = dict(template, sender=f"car-{i:07d}", compute_state=states[i % 3], soc=(i % 100) / 100)
        store.apply(info, VehicleTelemetry.model_construct(**fields))
    store.ingest(TOPICS.summary, summary(cars).model_dump_json().encode())
    store.link_changed("connected")
    return store


def churn(store: FleetStore, step: int, count: int = 50) -> None:
    """Between refreshes: some cars change state and a fresh summary arrives."""
    info = TOPICS.parse(TOPICS.telemetry("car-0"))
    template = telemetry("car-0", ComputeState.IDLE).model_dump()
    n = len(store.cars)
    for k in range(count):
        vid = store.arrival[(step * 7919 + k * 104729) % n]
        state = ComputeState.BUSY if (step + k) % 2 else ComputeState.IDLE
        store.apply(info, VehicleTelemetry.model_construct(**dict(template, sender=vid, compute_state=state)))
    store.summary = summary(n, busy=step % n)


def refresh_ms(app: FleetroomApp, table: NodeTable) -> float:
    """One timed refresh: the paint timer's work and every visible line of the node table, in milliseconds."""
    started = time.perf_counter()
    app.paint()
    for y in range(table.size.height):
        table.render_line(y)
    return (time.perf_counter() - started) * 1000


def median_p90(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[int(len(samples) * 0.9)]


async def time_refreshes(store: FleetStore, rounds: int) -> tuple[float, float]:
    """Median and p90 wall time of one refresh, in milliseconds."""
    app = FleetroomApp(BrokerUrl("127.0.0.1", 1883), TOPICS, store=store, connect=False, refresh_s=3600)
    samples: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.query_one(NodeTable)
        table.scroll_to(y=len(store.cars) // 2, animate=False)  # the middle of the fleet
        await pilot.pause()
        for step in range(rounds):
            churn(store, step)
            samples.append(refresh_ms(app, table))
            if step % 20 == 0:
                await pilot.pause()
    return median_p90(samples)


class LiveRefresh(NamedTuple):
    """Refreshes of a control room reading a live fleet, in milliseconds, and the cars its store held."""

    wall_median: float
    wall_p90: float
    cpu_median: float  # the UI thread's own CPU time: what is left when the fleet and broker take a core
    cpu_p90: float
    held: int


async def time_live_refreshes(url: BrokerUrl, cars: int, rounds: int, fill_timeout: float) -> LiveRefresh:
    """Refreshes of the control room reading a live fleet of `cars` cars (wall and CPU), and the cars it held."""
    store = FleetStore(TOPICS)
    # its own paint timer off: the timed refresh below is the only paint, one interval after the last
    app = FleetroomApp(url, TOPICS, store=store, connect=True, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        started = last = time.monotonic()
        while len(store.cars) < cars and time.monotonic() - started < fill_timeout:
            await asyncio.sleep(0.5)
            if time.monotonic() - last >= 5:
                last = time.monotonic()
                print(f"  filling: {len(store.cars):,} cars in the store after {last - started:.0f} s, "
                      f"{store.messages:,} messages", file=sys.stderr, flush=True)
        table = app.query_one(NodeTable)
        table.scroll_to(y=len(store.cars) // 2, animate=False)
        await pilot.pause()
        wall, cpu = [], []
        for _ in range(rounds):
            await asyncio.sleep(PAINT_INTERVAL_S)  # the worker ingests between paints, as it does for an operator
            cpu_started = time.thread_time()
            wall.append(refresh_ms(app, table))
            cpu.append((time.thread_time() - cpu_started) * 1000)
        held = len(store.cars)
    return LiveRefresh(*median_p90(wall), *median_p90(cpu), held)


def live_size(cars: int, rounds: int, fill_timeout: float) -> LiveRefresh:
    """Start Mosquitto and a fleet of `cars` cars, time the live control room's refreshes, stop them all."""
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp, supervisor(Path(tmp)) as sup:
        url = start_mosquitto(sup)
        clock = clock_flags(60.0, datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0), time.time())
        sup.start("fleet", fleetroom_command("vehicles", "--broker", str(url), "--topic-prefix", TOPICS.prefix,
                                             *essay_fleet_flags(cars, 1, 0, clock, 60.0)))
        return asyncio.run(time_live_refreshes(url, cars, rounds, fill_timeout))


def main_live(rounds: int, fill_timeout: float, big_fleet: int) -> int:
    """The `--live` run: 1k and 1M cars (or `big_fleet`), each filled by the real ingest.

    The ratio is of the UI thread's CPU time per refresh: on a small machine the bigger fleet and
    its broker take CPU from the control room, which stretches its wall time (printed too) without
    the refresh doing more work."""
    results = {}
    for cars in (1_000, big_fleet):
        r = results[cars] = live_size(cars, rounds, fill_timeout)
        print(f"{cars:>9,}-car live fleet: refresh CPU median {r.cpu_median:.3f} ms, p90 {r.cpu_p90:.3f} ms; wall "
              f"median {r.wall_median:.3f} ms, p90 {r.wall_p90:.3f} ms ({rounds} refreshes {PAINT_INTERVAL_S:g} s "
              f"apart, ingest running); {r.held:,} cars in the store", flush=True)
    big, small = results[big_fleet], results[1_000]
    where = "1M cars" if big.held >= 1_000_000 else f"{big.held:,} cars (of a {big_fleet:,}-car fleet)"
    print(f"wall-time ratio {big.wall_median / small.wall_median:.2f}; the last line is CPU time of the UI thread")
    print(f"tui_refresh: {big.cpu_median:.3f} ms per refresh at {where}; ratio {big.cpu_median / small.cpu_median:.2f} "
          f"vs 1k cars ({small.cpu_median:.3f} ms)")
    return 0


def time_full_sort(store: FleetStore) -> float:
    """What an operator's sort request costs (not part of a refresh), in milliseconds."""
    order = NodeOrder()
    order.set_sort("soc")
    started = time.perf_counter()
    order.rebuild(store)
    return (time.perf_counter() - started) * 1000


def ingest_rate(messages: int = 20_000) -> float:
    """Messages per second `FleetStore.ingest` takes in (decode, topic check, apply), for context."""
    store = FleetStore(TOPICS)
    ids = [f"car-{i % 5000:05d}" for i in range(messages)]
    payloads = [(TOPICS.telemetry(vid), telemetry(vid, ComputeState.IDLE).model_dump_json().encode()) for vid in ids]
    started = time.perf_counter()
    for topic, payload in payloads:
        store.ingest(topic, payload)
    return messages / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer refreshes per size (under 60 s)")
    parser.add_argument("--live", action="store_true", help="fill the store from a running fleet over Mosquitto "
                        "through the control room's own reader, and time refreshes while it keeps arriving")
    parser.add_argument("--fill-timeout", type=float, default=600.0, metavar="S",
                        help="with --live: time refreshes after this long even if the store is not full "
                        "(default: %(default)s)")
    parser.add_argument("--live-cars", type=int, default=1_000_000, metavar="N",
                        help="with --live: the large fleet (default: %(default)s)")
    args = parser.parse_args()
    rounds = 60 if args.quick else 300
    if args.live:
        stop_on_signals()
        return main_live(rounds, args.fill_timeout, args.live_cars)
    sizes = (1_000, 100_000, 1_000_000)
    results: dict[int, float] = {}
    for cars in sizes:
        started = time.perf_counter()
        store = build_store(cars)
        built = time.perf_counter() - started
        gc.collect()
        gc.freeze()  # a million long-lived rows: keep the cyclic collector from rescanning them
        median, p90 = asyncio.run(time_refreshes(store, rounds))
        sort_ms = time_full_sort(store)
        results[cars] = median
        print(f"{cars:>9,} cars: refresh median {median:.3f} ms, p90 {p90:.3f} ms ({rounds} refreshes); "
              f"store built in {built:.1f} s; an on-demand sort takes {sort_ms:,.0f} ms", flush=True)
        del store
        gc.unfreeze()
        gc.collect()
    print(f"for context: the store ingests {ingest_rate():,.0f} telemetry messages/s (decode + apply)")
    ratio = results[1_000_000] / results[1_000]
    print(f"tui_refresh: {results[1_000_000]:.3f} ms per refresh at 1M cars; ratio {ratio:.2f} vs 1k cars "
          f"({results[1_000]:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
