"""Cars a second one `fleetroom vehicles --mode gateway` process creates and announces, read back through Mosquitto.

The fleet process runs against a Mosquitto secured as `fleetroom broker --write-mosquitto-config`
writes it; `mosquitto_sub` (a C client, logged in as the observer) reads the gateway's rosters,
and a car counts as joined when the roster listing it has arrived: the rate is taken from the
fleet process's start to the arrival of the last block's roster. The process's resident memory
is read then, and again once every car is placed in its owner's day. The process's CPU seconds
are read too: on a shared machine they say what wall time cannot. The reference, measured in
the same run, is the fleet core alone creating and announcing as many cars (no process start-up,
no network); the ratio says how much of the core's pace reaches the broker.
Run: python bench/fleet_join.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support.ports import free_port, launch_mosquitto
from protocol.frames import roster_blocks
from protocol.identity import derive_password

SIM_START = "2026-11-30T10:00:00Z"
PREFIX = "bench"
MILLION = 1_000_000


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_rate(cars: int) -> float:
    """Cars a second the fleet core alone creates and announces in rosters (CPU time, this process)."""
    from fake_vehicles.fleet import Fleet, FleetConfig
    from fake_vehicles.messages import Encoder
    from protocol.topics import Topics

    t = datetime.fromisoformat(SIM_START).timestamp()
    fleet = Fleet(FleetConfig(seed=1, count=cars, gateway="gw-1-0-1"), Encoder(Topics(PREFIX), 0.0, "gw-1-0-1"),
                  random.Random(1))
    assert fleet.frames is not None
    fleet.encoder.stamp(datetime.now(UTC), t)
    start = time.process_time()
    while fleet.pending:
        fleet.join(t, 500, place=False)
        fleet.frames.rosters(fleet.cars)
    return cars / (time.process_time() - start)


def start_mosquitto(directory: Path, secret_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    subprocess.run([sys.executable, "-m", "fleetroom", "broker", "--write-mosquitto-config", str(directory),
                    "--secret-file", str(secret_file), "--port", str(port), "--topic-prefix", PREFIX],
                   check=True, capture_output=True)
    return launch_mosquitto(directory / "mosquitto.conf", port), port


class RosterWatch:
    """A mosquitto_sub reading every roster topic; when each block's roster first arrived."""

    def __init__(self, port: int, secret: bytes) -> None:
        binary = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
        self.proc = subprocess.Popen(
            [binary, "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv311", "-i", "observer:bench-join",
             "-u", "observer", "-P", derive_password(secret, "observer"), "-q", "1",
             "-t", f"{PREFIX}/v1/gateways/+/roster/+", "-F", "%t"], stdout=subprocess.PIPE)
        self.first: dict[str, float] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.first.setdefault(line.decode().strip(), time.monotonic())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def run_fleet(cars: int, port: int, secret_file: Path, watch: RosterWatch) -> tuple[float, float, int, float, int]:
    """(seconds until every block's roster arrived, the process's CPU seconds and RSS then, seconds until every
    car was placed, RSS then)."""
    argv = [sys.executable, "-m", "fleetroom", "vehicles", "--broker", f"mqtt://127.0.0.1:{port}",
            "--secret-file", str(secret_file), "--topic-prefix", PREFIX, "--count", str(cars), "--mode", "gateway",
            "--speed", "1", "--telemetry-interval", "60", "--sim-start", SIM_START]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    blocks = roster_blocks(cars)
    try:
        while len(watch.first) < blocks:
            if proc.poll() is not None:
                raise SystemExit(f"the fleet process exited: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.05)
        joined_s = max(watch.first.values()) - started
        joined_cpu, joined_rss = cpu_seconds(proc.pid), rss_bytes(proc.pid)
        placed_s, placed_rss = placed(proc, started, cars)
        return joined_s, joined_cpu, joined_rss, placed_s, placed_rss
    finally:
        proc.terminate()
        proc.wait(120)


def placed(proc: subprocess.Popen[str], started: float, cars: int) -> tuple[float, int]:
    """When the fleet's progress line (every 5 s) first counts every car joined, none left to place."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(f"vehicles: {cars} cars: "):  # "vehicles: N cars (M unplaced): ..." until then
            return time.monotonic() - started, rss_bytes(proc.pid)
    return float("nan"), 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 cars instead of a million")
    args = parser.parse_args()
    cars = 200_000 if args.quick else MILLION
    reference = core_rate(cars)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        secret_file = directory / "secret.txt"
        secret = b"bench-fleet-join-secret"
        secret_file.write_bytes(secret)
        broker, port = start_mosquitto(directory / "mosquitto", secret_file)
        watch = RosterWatch(port, secret)
        try:
            joined_s, joined_cpu, joined_rss, placed_s, placed_rss = run_fleet(cars, port, secret_file, watch)
        finally:
            watch.close()
            broker.terminate()
            broker.wait(30)
    rate = cars / joined_s
    print(f"fleet core alone: {reference:,.0f} cars/s created and announced (CPU time)")
    print(f"{cars:,} cars joined in {joined_s:.1f} s from the process's start (last roster read by mosquitto_sub); "
          f"RSS {joined_rss / 2**20:,.0f} MiB; every car placed after {placed_s:.1f} s, "
          f"RSS {placed_rss / 2**20:,.0f} MiB; the process had used {joined_cpu:.1f} s of CPU by the last roster "
          f"({cars / joined_cpu:,.0f} cars per CPU second, start-up included)")
    print(f"fleet_join: {rate:,.0f} cars/s; ratio {rate / reference:.2f} vs the fleet core alone "
          f"({reference:,.0f} cars/s)")


if __name__ == "__main__":
    main()
