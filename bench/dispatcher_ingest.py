"""Cars a second through `Engine.handle`: a fleet announced in gateway frames, against per-car messages.

The same cars are fed twice to a fresh engine with a real SQLite ledger in a temporary
directory: as 500-car rosters and 400-offer frames (`protocol.frames`), and as one status and
one offer message per car (the reference). Payloads are built beforehand, in chunks, outside
the timing; the engine's tick (which hands offers and owner modes to the ledger's writer thread)
runs every `TICK_S` seconds as in the service, and is timed with the rest, until the writer has
written the last tick. CPU is shown for the handling thread (the event loop's, in the service)
and for the process. The garbage collector is tuned as the service tunes it
(`dispatcher.collector`). Then the summary, the earnings report, a tick and a heartbeat walk over
every car are timed at full size.

    python bench/dispatcher_ingest.py            # 1,000,000 cars
    python bench/dispatcher_ingest.py --quick    # 200,000 cars
    python bench/dispatcher_ingest.py --profile  # cProfile of the frame run, top 25 by own time
    python bench/dispatcher_ingest.py --frames-only  # the frame run and the costs at full size, no reference

Last line: `dispatcher_ingest: <n> cars/s in frames; ratio <r> vs per-car messages (<p> cars/s)`.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher.collector import tune_collector
from dispatcher.engine import Engine
from dispatcher.ledger import Ledger
from protocol import Topics
from protocol.frames import OFFER_FRAME_MAX, ROSTER_BLOCK

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
STAMP = '"sent_at":"2026-11-29T09:00:00Z","sim_time":"2026-11-29T09:00:00Z"'
GATEWAYS = 4
TICK_S = 0.2  # the service's tick
MODES = ("compute", "compute", "compute", "both", "robotaxi", "none")
TOPICS = Topics("bench")


def vid(i: int) -> str:
    return f"car-{i:08x}"


def entry_json(i: int) -> str:
    owner = f'"owner-{i % 97:02d}"' if i % 3 == 0 else "null"
    return (f'{{"vehicle_id":"{vid(i)}","state":"online","hardware":"HW5","reason":"","owner_id":{owner},'
            f'"owner_mode":"{MODES[i % len(MODES)]}"}}')


def offer_json(i: int) -> str:
    return (f'{{"schema_version":1,"kind":"offer","sender":"{vid(i)}",{STAMP},"offer_id":"{vid(i)}-o1",'
            f'"hardware":"HW5","free_tops":{2500 + i % 2500}.0,"energy_budget_kwh":12.5,'
            f'"expected_departure":"2026-11-29T17:00:00Z","departure_confidence":0.85,'
            f'"price_per_tops_hour":0.0{2 + i % 5},"currency":"USD","soc":0.8,"region":"eu",'
            f'"requirements":{{"min_price_per_tops_hour":0.02,"max_shard_hours":null,"max_priority_wait":null}},'
            f'"pack_temp_c":21.5}}')


def status_json(i: int, gw: str) -> str:
    body = entry_json(i)[1:].replace(f'"vehicle_id":"{vid(i)}",', "")
    return f'{{"schema_version":1,"kind":"vehicle_status","sender":"{vid(i)}",{STAMP},"gateway":"{gw}",{body}'


def gateway_of(i: int) -> str:
    return f"gw-{i % GATEWAYS}"


def frame_chunks(cars: int) -> Iterator[list[tuple[str, bytes]]]:
    """Each gateway's cars in rosters of ROSTER_BLOCK, then their offers in frames of OFFER_FRAME_MAX."""
    per_gw = cars // GATEWAYS
    step = ROSTER_BLOCK * 40
    for start in range(0, per_gw, step):
        chunk: list[tuple[str, bytes]] = []
        for g in range(GATEWAYS):
            gw = f"gw-{g}"
            ids = [g + GATEWAYS * k for k in range(start, min(per_gw, start + step))]
            for b in range(0, len(ids), ROSTER_BLOCK):
                block = (start + b) // ROSTER_BLOCK
                body = ",".join(entry_json(i) for i in ids[b:b + ROSTER_BLOCK])
                payload = (f'{{"schema_version":1,"kind":"car_roster","sender":"{gw}",{STAMP},'
                           f'"block":{block},"cars":[{body}]}}')
                chunk.append((TOPICS.roster(gw, block), payload.encode()))
            for b in range(0, len(ids), OFFER_FRAME_MAX):
                body = ",".join(offer_json(i) for i in ids[b:b + OFFER_FRAME_MAX])
                payload = (f'{{"schema_version":1,"kind":"offer_frame","sender":"{gw}",{STAMP},'
                           f'"seq":{start + b},"offers":[{body}]}}')
                chunk.append((TOPICS.offer_frames(gw), payload.encode()))
        yield chunk


def per_car_chunks(cars: int) -> Iterator[list[tuple[str, bytes]]]:
    """The same cars, one status and one offer message each."""
    step = 20_000
    for start in range(0, cars, step):
        chunk: list[tuple[str, bytes]] = []
        for i in range(start, min(cars, start + step)):
            chunk.append((TOPICS.vehicle_status(vid(i)), status_json(i, gateway_of(i)).encode()))
            chunk.append((TOPICS.offer(vid(i)), offer_json(i).encode()))
        yield chunk


def new_engine(directory: Path) -> Engine:
    clock = [0.0]
    return Engine(TOPICS, Ledger(directory / "ledger.sqlite"), sim_now=lambda: T0, wall=lambda: clock[0],
                  rng=random.Random(1), heartbeat_timeout_s=1e9)


def feed(engine: Engine, chunks: Iterator[list[tuple[str, bytes]]]) -> tuple[float, float, float]:
    """(wall, this thread's CPU, the process's CPU) seconds spent in `handle` and `tick` for every chunk, until the
    ledger's writer thread has written the last tick (building the payloads not counted)."""
    spent = cpu = process = 0.0
    for chunk in chunks:
        started, cpu_started, process_started = time.perf_counter(), time.thread_time(), time.process_time()
        ticked = started
        for topic, payload in chunk:
            engine.handle(topic, payload)
            if time.perf_counter() - ticked >= TICK_S:  # as the service ticks
                engine.tick()
                ticked = time.perf_counter()
        spent += time.perf_counter() - started
        cpu += time.thread_time() - cpu_started
        process += time.process_time() - process_started
    started, cpu_started, process_started = time.perf_counter(), time.thread_time(), time.process_time()
    engine.tick()
    engine.ledger.db  # noqa: B018 -- waits for the writer thread's last batch
    return (spent + time.perf_counter() - started, cpu + time.thread_time() - cpu_started,
            process + time.process_time() - process_started)


def run(cars: int, per_car: bool, directory: Path, profile: bool = False) -> tuple[tuple[float, float, float], Engine]:
    """(wall, loop thread's CPU, process CPU) seconds to feed `cars` cars to a new engine with its ledger in
    `directory`, and the engine."""
    engine = new_engine(directory)
    gc.collect()
    chunks = per_car_chunks(cars) if per_car else frame_chunks(cars)
    if not profile:
        return feed(engine, chunks), engine
    profiler = cProfile.Profile()
    profiler.enable()
    seconds = feed(engine, chunks)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return seconds, engine


def timed(what: str, step: object) -> None:
    started = time.perf_counter()
    step()  # type: ignore[operator]
    print(f"  {what}: {1000 * (time.perf_counter() - started):.1f} ms")


def heartbeat_walk(engine: Engine) -> None:
    """Every car due at once, each alive through its gateway's heartbeat: the ticks it takes to walk them to
    the back of the heartbeat queue, and the longest one (the loop stands that long)."""
    registry = engine.registry
    registry.heartbeat_timeout_s = 10.0
    now = max(registry._last_heard.values(), default=0.0) + 100.0  # every car is due
    for gateway in list(registry.by_gateway):
        registry.heard_gateway(gateway, now)
    calls, longest, total = 0, 0.0, 0.0
    while True:
        started = time.perf_counter()
        gone = registry.expire(now + 5.0)
        took = time.perf_counter() - started
        calls, longest, total = calls + 1, max(longest, took), total + took
        assert gone == [], "a car whose gateway was heard went offline"
        if next(iter(registry._last_heard.values())) >= now:  # walked: every car is at the back
            break
    print(f"  heartbeat walk of {len(registry.cars):,} cars due at once: {calls} ticks, "
          f"longest {1000 * longest:.1f} ms, {1000 * total:.0f} ms in all")


def resident_mib() -> float:
    """This process's peak resident memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 cars instead of 1,000,000")
    parser.add_argument("--profile", action="store_true", help="cProfile the frame run")
    parser.add_argument("--cars", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--frames-only", action="store_true", help="no per-car reference (nor its last line)")
    args = parser.parse_args()
    cars = args.cars or (200_000 if args.quick else 1_000_000)
    tune_collector()  # as the dispatcher's service does
    with tempfile.TemporaryDirectory(prefix="dispatcher-ingest-") as tmp:
        (frames_s, frames_cpu, frames_all), engine = run(cars, False, Path(tmp) / "frames", profile=args.profile)
        known = len(engine.registry.cars)
        assert known == cars and len(engine.offers.book) == cars, (known, len(engine.offers.book))
        print(f"frames: {cars:,} cars in {frames_s:.2f} s ({1e6 * frames_s / cars:.2f} us/car; CPU: the loop's thread "
              f"{frames_cpu:.2f} s, {1e6 * frames_cpu / cars:.2f} us/car; the process {frames_all:.2f} s)")
        engine.summary()  # the first one also builds the owner-day model's tables, once per process
        timed(f"summary at {cars:,} cars", engine.summary)
        timed(f"earnings report at {cars:,} cars (its own read-only connection)", engine.earnings_report)
        timed(f"scheduling tick at {cars:,} cars", engine.tick)
        heartbeat_walk(engine)
        print(f"  resident memory: {resident_mib():,.0f} MiB")
        engine.ledger.close()
        if args.frames_only:
            return
        del engine
        gc.collect()
        (per_car_s, per_car_cpu, _), engine = run(cars, True, Path(tmp) / "per-car")
        assert len(engine.registry.cars) == cars and len(engine.offers.book) == cars
        engine.ledger.close()
    print(f"per-car messages: {cars:,} cars in {per_car_s:.2f} s ({1e6 * per_car_s / cars:.2f} us/car; "
          f"CPU: this thread {per_car_cpu:.2f} s)")
    rate, reference = cars / frames_s, cars / per_car_s
    print(f"dispatcher_ingest: {rate:,.0f} cars/s in frames; ratio {rate / reference:.2f} vs per-car messages "
          f"({reference:,.0f} cars/s)")


if __name__ == "__main__":
    main()
