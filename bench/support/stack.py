"""Processes the scale benchmarks start: a Mosquitto of their own, cleanup on any exit, RSS and retained watches."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import FrameType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker.mosquitto_config import anonymous_conf
from fleetroom.compose.essay import essay_telemetry_s, shard_flags
from fleetroom.compose.stack import MOSQUITTO, free_port, port_open
from fleetroom.compose.supervisor import Supervisor, wait_for
from mqttlink import BrokerUrl

PAGE = os.sysconf("SC_PAGE_SIZE")
ROOT = Path(__file__).resolve().parent.parent.parent


def supervisor(run_dir: Path) -> Supervisor:
    """A `Supervisor` whose Python children import this checkout (children run in `run_dir`, where a
    relative PYTHONPATH, or the venv's own install of fleetroom, would give them other code)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return Supervisor(run_dir, env=env)


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so that the `Supervisor` block stops every child."""

    def unwind(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, unwind)
    signal.signal(signal.SIGHUP, unwind)


def start_mosquitto(supervisor: Supervisor, name: str = "mosquitto") -> BrokerUrl:
    """An anonymous Mosquitto on a free 127.0.0.1 port with the demo's million-car settings (`anonymous_conf`).

    `sys_interval 1` lets a bench read the broker's own counters ($SYS) once a second.
    """
    if MOSQUITTO is None:
        raise SystemExit("bench: mosquitto is not installed (Debian: apt-get install mosquitto mosquitto-clients)")
    port = free_port()
    conf = supervisor.run_dir / f"{name}.conf"
    conf.write_text(anonymous_conf(port) + "sys_interval 1\n")
    supervisor.start(name, [MOSQUITTO, "-c", str(conf)])
    wait_for(lambda: port_open(port), 15, "mosquitto to listen", supervisor)
    return BrokerUrl("127.0.0.1", port)


def essay_fleet_flags(cars: int, processes: int, index: int, clock: list[str], speed: float) -> list[str]:
    """What `fleetroom demo --scenario essay` gives fleet process `index` of `processes` for `cars` cars."""
    return ["--count", str(cars), "--hardware-mix", "HW5=1", "--telemetry-interval",
            f"{essay_telemetry_s(cars, speed):g}", "--seed", "1", *clock, "--mode", "gateway", "--faulty-share", "0",
            *shard_flags(index, processes)]


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc (children of every thread)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return out


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory summed over `pids` and their descendants (0 for a process that is gone)."""
    total = 0
    for pid in {d for p in pids for d in descendants(p)}:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


class PeakRss:
    """Samples the summed RSS of a supervisor's children every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, supervisor: Supervisor, interval: float = 0.5) -> None:
        self.supervisor, self.interval = supervisor, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes(self.supervisor.pids()))

    def close(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


class TopicWatch:
    """A paho reader in its own thread keeping every message on `filters` with its arrival time."""

    def __init__(self, url: BrokerUrl, filters: Iterable[str], client_id: str) -> None:
        self.received: list[tuple[float, str, bytes]] = []
        self.lock = threading.Lock()
        self.filters = [(f, 1) for f in filters]
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        c.on_connect = lambda cl, *_: cl.subscribe(self.filters)
        c.on_message = self._on_message
        c.connect(url.host, url.port)
        c.loop_start()
        self.client = c

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received.append((time.monotonic(), msg.topic, bytes(msg.payload)))

    def since(self, index: int) -> list[tuple[float, str, bytes]]:
        """What arrived after the first `index` messages."""
        with self.lock:
            return self.received[index:]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def rate_over(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Count per second between the first and last (time, cumulative count) sample inside [start, end]."""
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        raise SystemExit(f"bench: too few samples in the window ({len(inside)}); was the reader starved?")
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return (c1 - c0) / (t1 - t0)


def reached_at(samples: list[tuple[float, int]], target: int) -> float | None:
    """When a cumulative count first reached `target`, interpolated linearly between the samples around it."""
    previous = None
    for t, count in samples:
        if count >= target:
            if previous is None or count == previous[1]:
                return t
            pt, pc = previous
            return pt + (t - pt) * (target - pc) / (count - pc)
        previous = (t, count)
    return None


class FleetMetrics:
    """Polls the `/metrics` of fleet processes in a thread: (snapshot time, cars joined over all of them)."""

    CARS = re.compile(rb"^fleetroom_fleet_cars_known (\S+)$", re.MULTILINE)
    TAKEN = re.compile(rb"^fleetroom_fleet_snapshot_timestamp_seconds (\S+)$", re.MULTILINE)

    def __init__(self, ports: list[int], interval: float = 0.25) -> None:
        self.ports, self.interval = ports, interval
        self.latest: dict[int, tuple[float, int]] = {}
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for port in self.ports:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                        text = response.read()
                except OSError:
                    continue  # not serving yet
                cars, taken = self.CARS.search(text), self.TAKEN.search(text)
                if cars and taken and self.latest.get(port, (0.0, 0))[0] != float(taken[1]):
                    self.latest[port] = (float(taken[1]), int(float(cars[1])))
                    self.samples.append((max(t for t, _ in self.latest.values()),
                                         sum(c for _, c in self.latest.values())))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
