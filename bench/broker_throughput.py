"""Messages per second through the embedded amqtt broker and through Mosquitto.

For each broker, in the same run: a bare paho-mqtt publish loop (the reference: how fast one
Python publisher can hand messages to that broker) and the rate at which a subscriber in
another process receives the same messages through it (the figure). Payloads are real
telemetry JSON (about 640 bytes). QoS 0, loopback, each broker in its own process.

With --tls, each broker is measured twice in the run, in plain text and over TLS (a local
CA from `broker.tls`, TLS 1.2+ as negotiated), and the last line is the cost of TLS: the
amqtt figure over TLS against the same broker without it.

    python bench/broker_throughput.py [--quick] [--messages N] [--tls]
"""

from __future__ import annotations

import argparse
import getpass
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import paho.mqtt.client as paho

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support.messages import telemetry  # noqa: E402
from bench.support.ports import free_port, launch_mosquitto  # noqa: E402
from broker.tls import ensure_server_files, mosquitto_tls_lines  # noqa: E402
from mqttlink import BrokerUrl, client_ssl_context  # noqa: E402

DELIVERED_TOPIC = "bench/v1/vehicles/car-0a1b2c3d4e/telemetry"
BARE_TOPIC = "bare/v1/vehicles/car-0a1b2c3d4e/telemetry"  # nobody subscribes


def _client(name: str, ca: str | None = None) -> paho.Client:
    """A paho client; over TLS with `ca` (verifying 127.0.0.1 against it, as fleetroom's clients do)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv311)
    if ca is not None:
        client.tls_set_context(client_ssl_context(BrokerUrl("127.0.0.1", tls=True, ca_file=ca)))
    return client




@contextmanager
def amqtt_process(tls_dir: Path | None) -> Iterator[int]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        tls = [] if tls_dir is None else ["--tls", "--tls-dir", str(tls_dir)]
        proc = subprocess.Popen([sys.executable, "-m", "fleetroom", "broker", "--anonymous", "--port", "0",
                                 "--port-file", str(port_file), *tls], cwd=tmp, stdout=subprocess.DEVNULL,
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
def mosquitto_process(tls_dir: Path | None) -> Iterator[int]:
    port = free_port()
    tls = [] if tls_dir is None else mosquitto_tls_lines(ensure_server_files(tls_dir)[0])
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "m.conf"
        lines = [f"listener {port} 127.0.0.1", *tls, "allow_anonymous true", "max_queued_messages 0"]
        if tls_dir is not None:
            lines.append(f"user {getpass.getuser()}")  # as root, mosquitto would drop to a user who cannot read the key
        conf.write_text("\n".join(lines) + "\n")
        proc = launch_mosquitto(conf, port, timeout=20.0)
        try:
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


def _subscriber(port: int, expected: int, ready: mp.Event, out: mp.Queue, ca: str | None) -> None:  # type: ignore[type-arg]
    """Count messages until `expected` arrive or none arrive for 3 s; report (count, first, last)."""
    state = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        now = time.monotonic()
        if state["n"] == 0:
            state["first"] = now
        state["n"] += 1
        state["last"] = now

    client = _client(f"bench-sub-{port}", ca)
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


def publish_loop(port: int, n: int, payload: bytes, topic: str, ca: str | None) -> tuple[float, float]:
    """A bare paho publish loop; returns (start, end) monotonic times."""
    client = _client(f"bench-pub-{port}-{time.monotonic_ns()}", ca)
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


def measure(port: int, n: int, payload: bytes, ca: str | None) -> tuple[float, float, float]:
    """(bare publish msg/s, delivered msg/s, delivered share) on the broker at `port` (over TLS with `ca`)."""
    ready, out = mp.Event(), mp.Queue()
    sub = mp.Process(target=_subscriber, args=(port, n, ready, out, ca))
    sub.start()
    ready.wait(30)
    start, _ = publish_loop(port, n, payload, DELIVERED_TOPIC, ca)
    count, _first, last = out.get(timeout=120)
    sub.join(30)
    delivered = count / (last - start) if count else 0.0
    # the reference second, once the broker has drained the first run
    start, end = publish_loop(port, n, payload, BARE_TOPIC, ca)
    bare = n / (end - start)
    return bare, delivered, count / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer messages (under a minute)")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--tls", action="store_true", help="measure each broker in plain text and over TLS")
    args = parser.parse_args()
    n = args.messages or (20_000 if args.quick else 200_000)
    payload = telemetry().model_dump_json().encode()
    print(f"payload {len(payload)} bytes, {n:,} messages per measurement, QoS 0, loopback")
    with tempfile.TemporaryDirectory() as tmp:
        tls_dir = Path(tmp) / "tls"
        results = run_all(n, payload, tls_dir if args.tls else None)
    if args.tls:
        for name in ("mosquitto", "amqtt"):
            plain, tls = results[name][1], results[f"{name} tls"][1]
            print(f"{name:>9}: over TLS {tls:,.0f} msg/s vs {plain:,.0f} msg/s in plain text; ratio {tls / plain:.2f}")
        plain, tls = results["amqtt"][1], results["amqtt tls"][1]
        print(f"broker_throughput (TLS): {tls:,.0f} msg/s; ratio {tls / plain:.2f} vs the same broker without TLS")
        return
    bare, delivered = results["mosquitto"]
    print(f"broker_throughput (mosquitto): {delivered:,.0f} msg/s; ratio {delivered / bare:.2f} "
          "vs bare paho publish loop")
    bare, delivered = results["amqtt"]
    print(f"broker_throughput: {delivered:,.0f} msg/s; ratio {delivered / bare:.2f} vs bare paho publish loop")


def run_all(n: int, payload: bytes, tls_dir: Path | None) -> dict[str, tuple[float, float]]:
    """Measure every broker (and, with `tls_dir`, every broker over TLS too): name -> (bare, delivered)."""
    results = {}
    runs: list[tuple[str, Callable[[Path | None], AbstractContextManager[int]], Path | None]] = [
        ("mosquitto", mosquitto_process, None), ("amqtt", amqtt_process, None)]
    if tls_dir is not None:
        ensure_server_files(tls_dir)
        runs += [("mosquitto tls", mosquitto_process, tls_dir), ("amqtt tls", amqtt_process, tls_dir)]
    for name, broker, tls in runs:
        ca = None if tls is None else str(tls / "ca.crt")
        with broker(tls) as port:
            bare, delivered, share = measure(port, n, payload, ca)
        results[name] = (bare, delivered)
        print(f"{name:>13}: bare paho publish loop {bare:>9,.0f} msg/s; delivered through the broker "
              f"{delivered:>9,.0f} msg/s ({share:.1%} of messages arrived); ratio {delivered / bare:.2f}")
    return results


if __name__ == "__main__":
    main()
