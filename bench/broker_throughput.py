"""Messages per second through the embedded amqtt broker and through Mosquitto.

For each broker, in the same run: a bare paho-mqtt publish loop (the reference: how fast one
Python publisher can hand messages to that broker) and the rate at which a subscriber in
another process receives the same messages through it (the figure). Payloads are real
telemetry JSON (about 640 bytes). QoS 0, loopback, each broker in its own process.

    python bench/broker_throughput.py [--quick] [--messages N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.samples import telemetry  # noqa: E402

DELIVERED_TOPIC = "bench/v1/vehicles/car-0a1b2c3d4e/telemetry"
BARE_TOPIC = "bare/v1/vehicles/car-0a1b2c3d4e/telemetry"  # nobody subscribes


def _client(name: str) -> paho.Client:
    return paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv311)


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"broker on port {port} did not start")


@contextmanager
def amqtt_process() -> Iterator[int]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen([sys.executable, "-m", "fleetroom", "broker", "--anonymous", "--port", "0",
                                 "--port-file", str(port_file)], cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text().strip()):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the embedded broker did not start")
                time.sleep(0.05)
            yield int(port_file.read_text())
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def mosquitto_process() -> Iterator[int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


def _subscriber(port: int, expected: int, ready: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Count messages until `expected` arrive or none arrive for 3 s; report (count, first, last)."""
    state = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        now = time.monotonic()
        if state["n"] == 0:
            state["first"] = now
        state["n"] += 1
        state["last"] = now

    client = _client(f"bench-sub-{port}")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe("bench/#", qos=0)
    client.loop_start()
    time.sleep(0.3)  # let the SUBACK arrive before the publisher starts
    ready.set()
    idle_since = time.monotonic()
    seen = 0
    while state["n"] < expected and time.monotonic() - idle_since < 3.0:
        time.sleep(0.01)
        if state["n"] != seen:
            seen, idle_since = state["n"], time.monotonic()
    client.loop_stop()
    client.disconnect()
    out.put((state["n"], state["first"], state["last"]))


def publish_loop(port: int, n: int, payload: bytes, topic: str) -> tuple[float, float]:
    """A bare paho publish loop; returns (start, end) monotonic times."""
    client = _client(f"bench-pub-{port}-{time.monotonic_ns()}")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.monotonic()
    info = None
    for _ in range(n):
        info = client.publish(topic, payload, qos=0)
    assert info is not None
    info.wait_for_publish(60)
    end = time.monotonic()
    client.loop_stop()
    client.disconnect()
    return start, end


def measure(port: int, n: int, payload: bytes) -> tuple[float, float, float]:
    """(bare publish msg/s, delivered msg/s, delivered share) on the broker at `port`."""
    ready, out = mp.Event(), mp.Queue()
    sub = mp.Process(target=_subscriber, args=(port, n, ready, out))
    sub.start()
    ready.wait(30)
    start, _ = publish_loop(port, n, payload, DELIVERED_TOPIC)
    count, _first, last = out.get(timeout=120)
    sub.join(30)
    delivered = count / (last - start) if count else 0.0
    # the reference second, once the broker has drained the first run
    start, end = publish_loop(port, n, payload, BARE_TOPIC)
    bare = n / (end - start)
    return bare, delivered, count / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer messages (under a minute)")
    parser.add_argument("--messages", type=int)
    args = parser.parse_args()
    n = args.messages or (20_000 if args.quick else 200_000)
    payload = telemetry().model_dump_json().encode()
    print(f"payload {len(payload)} bytes, {n:,} messages per measurement, QoS 0, loopback")
    results = {}
    for name, broker in (("mosquitto", mosquitto_process), ("amqtt", amqtt_process)):
        with broker() as port:
            bare, delivered, share = measure(port, n, payload)
        results[name] = (bare, delivered)
        print(f"{name:>9}: bare paho publish loop {bare:>9,.0f} msg/s; delivered through the broker "
              f"{delivered:>9,.0f} msg/s ({share:.1%} of messages arrived); ratio {delivered / bare:.2f}")
    bare, delivered = results["mosquitto"]
    print(f"broker_throughput (mosquitto): {delivered:,.0f} msg/s; ratio {delivered / bare:.2f} "
          "vs bare paho publish loop")
    bare, delivered = results["amqtt"]
    print(f"broker_throughput: {delivered:,.0f} msg/s; ratio {delivered / bare:.2f} vs bare paho publish loop")


if __name__ == "__main__":
    main()
