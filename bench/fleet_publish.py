"""Telemetry messages per second one `fleetroom vehicles` process sustains in gateway mode on Mosquitto.

The reference is a bare paho-mqtt publish loop (`loop_start`, then `publish` in a loop) sending
the same telemetry payloads on the same topics to the same broker in the same run. Both rates
are counted by the broker itself ($SYS/broker/publish/messages/received, sampled each second),
so neither side's own bookkeeping is trusted and no subscriber competes for the CPU. The
two alternate for a few rounds and the best round of each is compared, because the machine
is shared and load from elsewhere comes and goes.
Run: python bench/fleet_publish.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.support.ports import free_port, launch_mosquitto
from fake_vehicles.fleet import Fleet, FleetConfig
from fake_vehicles.messages import Encoder
from protocol.topics import Channel, Topics

SIM_START = "2026-11-30T10:00:00Z"
PREFIX = "bench"
SYS_TOPIC = "$SYS/broker/publish/messages/received"


def start_mosquitto(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nsys_interval 1\n")
    return launch_mosquitto(conf, port), port


class BrokerCounter:
    """Samples the broker's count of received PUBLISH packets, with the time each sample arrived."""

    def __init__(self, port: int) -> None:
        self.samples: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sys-{os.getpid()}")
        c.on_connect = lambda cl, *_: cl.subscribe(SYS_TOPIC)
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.samples.append((time.monotonic(), int(msg.payload)))

    def rate_between(self, start: float, end: float) -> float:
        with self.lock:
            inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            raise SystemExit("too few broker samples; is sys_interval honoured?")
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def sample_payloads(cars: int, seed: int) -> list[tuple[str, bytes]]:
    """The telemetry the fleet process sends, built by the same code from the same seed."""
    start = datetime.fromisoformat(SIM_START)
    fleet = Fleet(FleetConfig(seed=seed, count=cars, gateway="gw-bench"), Encoder(Topics(PREFIX), 0.0, "gw-bench"),
                  random.Random(seed))
    t = start.timestamp()
    fleet.encoder.stamp(datetime.now(UTC), t)
    fleet.join(t, cars)
    out = []
    for car in fleet.cars:
        reason = car.suspend_reason(t)
        out.append((fleet.encoder.topic(car.vehicle_id, Channel.TELEMETRY),
                    fleet.encoder.telemetry(car, reason, car.compute_state(reason))))
    return out


def reference_child(port: int, seconds: float, payload_file: str) -> None:
    """The bare loop: paho's own network thread, publish as fast as Python can call it."""
    payloads = pickle.loads(Path(payload_file).read_bytes())
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{os.getpid()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    end = time.monotonic() + seconds
    n = len(payloads)
    i = 0
    while time.monotonic() < end:
        for _ in range(1000):
            topic, payload = payloads[i % n]
            c.publish(topic, payload, 0)
            i += 1
    c.loop_stop()
    c.disconnect()


def measure(counter: BrokerCounter, cmd: list[str], warmup: float, window: float) -> float:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(warmup)
        start = time.monotonic()
        time.sleep(window)
        end = time.monotonic()
    finally:
        proc.terminate()
        proc.wait(30)
    time.sleep(0.2)
    return counter.rate_between(start, end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows (under a minute in all)")
    parser.add_argument("--cars", type=int, default=20_000)
    parser.add_argument("--_reference", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._reference:
        reference_child(int(args._reference[0]), float(args._reference[1]), args._reference[2])
        return
    warmup, window, rounds = (3.0, 4.0, 3) if args.quick else (6.0, 15.0, 5)
    with tempfile.TemporaryDirectory() as tmp:
        broker, port = start_mosquitto(Path(tmp))
        counter = BrokerCounter(port)
        try:
            payloads = Path(tmp) / "payloads.pickle"
            payloads.write_bytes(pickle.dumps(sample_payloads(args.cars, 1)))
            fleet_cmd = [sys.executable, "-m", "fleetroom", "vehicles", "--broker", f"mqtt://127.0.0.1:{port}",
                         "--topic-prefix", PREFIX, "--count", str(args.cars), "--mode", "gateway", "--seed", "1",
                         "--telemetry-interval", "1", "--speed", "60", "--sim-start", SIM_START]
            ref_cmd = [sys.executable, __file__, "--_reference", str(port), str(warmup + window + 5), str(payloads)]
            fleet_rates, bare_rates = [], []
            for _ in range(rounds):  # alternate, so that load from elsewhere hits both alike
                fleet_rates.append(measure(counter, fleet_cmd, warmup, window))
                bare_rates.append(measure(counter, ref_cmd, warmup / 2, window))
        finally:
            counter.close()
            broker.terminate()
            broker.wait(10)
    fleet_rate, bare_rate = max(fleet_rates), max(bare_rates)
    print(f"fleet process (gateway mode, {args.cars:,} cars, telemetry saturating), per round: "
          f"{', '.join(f'{r:,.0f}' for r in fleet_rates)} msgs/s; best {fleet_rate:,.0f}")
    print(f"bare paho-mqtt loop_start + publish loop, same payloads, per round: "
          f"{', '.join(f'{r:,.0f}' for r in bare_rates)} msgs/s; best {bare_rate:,.0f}")
    paired = sorted(f / b for f, b in zip(fleet_rates, bare_rates, strict=True))
    print(f"ratio per round (fleet / bare, same round): {', '.join(f'{r:.2f}' for r in paired)}; "
          f"median {paired[len(paired) // 2]:.2f}")
    print(f"fleet_publish: {fleet_rate:,.0f} msgs/s; ratio {fleet_rate / bare_rate:.2f} vs bare paho-mqtt publish loop")


if __name__ == "__main__":
    main()
