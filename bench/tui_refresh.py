"""The cost of one control-room refresh with 1k, 100k and 1M cars in the store.

A refresh is what the paint timer does: tick the store, rebuild the header, health bar and
state strip text, bring the node order up to date (new cars appended), and render every
visible line of the node table. It runs in a mounted headless app at 160x50, with a few
cars changing between refreshes (their message handling is not timed: it is the worker's
cost, not the paint's). Run: `python bench/tui_refresh.py [--quick]`.

Prints, last: `tui_refresh: <ms> ms per refresh at 1M cars; ratio <r> vs 1k cars`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support.messages import summary, telemetry
from mqttlink import BrokerUrl
from protocol import ComputeState, Topics, VehicleTelemetry
from protocol.codec import check_on_topic
from tui.app import FleetroomApp
from tui.nodeview import NodeOrder
from tui.store import FleetStore
from tui.widgets import NodeTable

TOPICS = Topics("bench")
SIZE = (160, 50)


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


async def time_refreshes(store: FleetStore, rounds: int) -> tuple[float, float]:
    """Median and p90 wall time of one refresh, in milliseconds."""
    app = FleetroomApp(BrokerUrl("127.0.0.1", 1883), TOPICS, store=store, connect=False, refresh_s=3600)
    samples: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.query_one(NodeTable)
        table.scroll_to(y=len(store.cars) // 2, animate=False)  # the middle of the fleet
        await pilot.pause()
        height = table.size.height
        for step in range(rounds):
            churn(store, step)
            started = time.perf_counter()
            app.paint()
            for y in range(height):
                table.render_line(y)
            samples.append((time.perf_counter() - started) * 1000)
            if step % 20 == 0:
                await pilot.pause()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9)]


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
    args = parser.parse_args()
    rounds = 60 if args.quick else 300
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
