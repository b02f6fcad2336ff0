"""Memory per emulated car in each connection mode, and what a million cars take in gateway mode.

Gateway mode: a child process builds the fleet core with N cars (all joined, each looked at once,
as a running fleet has them) and reports its resident memory before and after. Per-car mode:
`fleetroom vehicles --mode per-car` runs against a real Mosquitto with few and with more cars,
and the difference in resident memory is divided by the difference in cars. Both are measured
in the same run; the last line compares them.
Run: python bench/fleet_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support.ports import free_port, launch_mosquitto

SIM_START = "2026-11-30T10:00:00Z"
BUDGET_BYTES = 1.5 * 2**30  # the target: a million cars in gateway mode
MILLION = 1_000_000


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def gateway_child(cars: int) -> None:
    """Build and sweep a fleet of `cars`; print `before after` resident bytes."""
    from fake_vehicles.fleet import Fleet, FleetConfig
    from fake_vehicles.messages import Encoder
    from protocol.topics import Topics

    t = datetime.fromisoformat(SIM_START).timestamp()
    fleet = Fleet(FleetConfig(seed=1, count=cars, gateway="gw-bench"), Encoder(Topics("bench"), 0.0, "gw-bench"),
                  random.Random(1))
    fleet.encoder.stamp(datetime.now(UTC), t)
    before = rss_bytes()
    assert fleet.frames is not None
    while fleet.pending:
        fleet.join(t, 10_000)
        fleet.frames.rosters(fleet.cars)  # the runner hands these to the socket as they come
        fleet.outbox.clear()
    fleet.advance(t + 60)
    while fleet.sweep_due:
        fleet.sweep(t + 60, 10_000)
        fleet.frames.offer_frames(final=True)
        fleet.outbox.clear()
    print(before, rss_bytes(), len(fleet.cars))


def per_car_rss(port: int, cars: int, settle: float) -> int:
    cmd = [sys.executable, "-m", "fleetroom", "vehicles", "--broker", f"mqtt://127.0.0.1:{port}", "--count",
           str(cars), "--mode", "per-car", "--sim-start", SIM_START, "--topic-prefix", "benchmem"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle)
        return rss_bytes(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def per_car_mode(few: int, many: int, settle: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = launch_mosquitto(conf, port)  # returns once it listens
        try:
            low = per_car_rss(port, few, settle)
            high = per_car_rss(port, many, settle)
        finally:
            broker.terminate()
            broker.wait(10)
    return (high - low) / (many - few)


def gateway_mode(cars: int) -> tuple[float, int]:
    done = subprocess.run([sys.executable, __file__, "--_child", str(cars)], capture_output=True, text=True,
                          check=True)
    before, after, joined = map(int, done.stdout.split())
    return (after - before) / joined, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 cars instead of a million (under a minute)")
    parser.add_argument("--_child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        gateway_child(args._child)
        return
    cars = 200_000 if args.quick else MILLION
    per_gateway, total = gateway_mode(cars)
    per_car = per_car_mode(10, 110 if args.quick else 210, 6.0 if args.quick else 10.0)
    million = total + per_gateway * (MILLION - cars)
    print(f"gateway mode: {per_gateway:,.0f} B/car with {cars:,} cars; process {total / 2**20:,.0f} MiB")
    print(f"gateway mode, a million cars: {million / 2**30:.2f} GiB (target {BUDGET_BYTES / 2**30:.1f} GiB): "
          f"{'within' if million <= BUDGET_BYTES else 'OVER'}")
    print(f"per-car mode (a paho client and socket each): {per_car:,.0f} B/car")
    print(f"fleet_memory: {per_gateway:,.0f} B/car in gateway mode; ratio {per_gateway / per_car:.3f} "
          f"vs per-car mode ({per_car:,.0f} B/car)")


if __name__ == "__main__":
    main()
