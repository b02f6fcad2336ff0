"""Messages a second one reader takes from Mosquitto: BulkLink, aiomqtt and the C `mosquitto_sub`, on one stream.

A Mosquitto on a free port; several `mosquitto_pub -l` processes (C) publish N status-sized
JSON messages (about 640 bytes) at QoS 0 (or 1 with --qos 1); three readers, each its own process and each
subscribed to everything before the first message, read the same stream at the same time:
`mqttlink.BulkLink`, an aiomqtt client as fleetroom made them (`mqttlink.make_client`), and
`mosquitto_sub` (the reference). A reader's rate is N over the wall time from the publishers'
start to its last message; every reader must get all N (the broker queues without limit).

    python bench/bulk_read.py [--quick] [--messages N] [--publishers P] [--qos 0|1]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support.messages import telemetry  # noqa: E402
from mqttlink import BrokerUrl, BulkLink, make_client  # noqa: E402

FILTER = "bench/v1/vehicles/#"
READERS = ("bulk", "aiomqtt", "mosquitto_sub")
READ_TIMEOUT_S = 120
# Mosquitto 2.0.11 disconnects a `mosquitto_pub -l -q 1` ("out of memory") once its packet ids wrap
# past 65,535 (seen here; BulkLink's own ids skip those in use and publish 150k QoS 1 messages fine)
MAX_PER_QOS1_PUBLISHER = 60_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _program(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        raise SystemExit(f"bulk_read: {name} is not installed (Debian's mosquitto and mosquitto-clients; `make`)")
    return path


# the readers, each in its own process ------------------------------------------------------------
async def _read_bulk(port: int, count: int, qos: int) -> float:
    async with BulkLink(BrokerUrl("127.0.0.1", port), "reader-bulk") as link:
        await link.subscribe([(FILTER, qos)])
        got = 0
        async for batch in link.batches():
            got += len(batch)
            if got >= count:
                return time.time()
    raise SystemExit(f"bulk_read: BulkLink ended after {got} messages")


async def _read_aiomqtt(port: int, count: int, qos: int) -> float:
    async with make_client(BrokerUrl("127.0.0.1", port), "reader-aiomqtt") as client:
        await client.subscribe(FILTER, qos=qos)
        got = 0
        async for _ in client.messages:
            got += 1
            if got >= count:
                return time.time()
    raise SystemExit(f"bulk_read: aiomqtt ended after {got} messages")


def reader_main(kind: str, port: int, count: int, qos: int) -> None:
    """Read `count` messages and print the wall time of the last one."""
    read = _read_bulk if kind == "bulk" else _read_aiomqtt
    print(f"{asyncio.run(read(port, count, qos)):.6f}", flush=True)


# the run ----------------------------------------------------------------------------------------
class Broker:
    """A Mosquitto that logs every subscription (so the run knows when each reader is subscribed)."""

    def __init__(self, directory: Path) -> None:
        self.port, self.log = _free_port(), directory / "mosquitto.log"
        conf = directory / "mosquitto.conf"
        conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
            "max_queued_messages 0", "max_inflight_messages 1000", "set_tcp_nodelay true",
            f"log_dest file {self.log}", "log_type subscribe", "log_type error", "log_type notice",
            f"user {getpass.getuser()}", ""]))  # as root, mosquitto would drop to a user who cannot write the log
        self.proc = subprocess.Popen([_program("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def subscribed(self, client_id: str) -> bool:
        return self.log.exists() and f" {client_id} " in self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bulk_read: timed out waiting for {what}")
        time.sleep(0.02)


def _start_readers(broker: Broker, n: int, qos: int, children: list[subprocess.Popen[bytes]]) -> None:
    """The three readers, in `children` in the order of `READERS`, once each has subscribed."""
    for kind in ("bulk", "aiomqtt"):
        children.append(subprocess.Popen(
            [sys.executable, __file__, "--reader", kind, "--port", str(broker.port), "--messages", str(n),
             "--qos", str(qos)], stdout=subprocess.PIPE))
    children.append(subprocess.Popen(
        [_program("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv311",
         "-i", "reader-mosquitto_sub", "-q", str(qos), "-t", FILTER, "-C", str(n)], stdout=subprocess.DEVNULL))
    for kind in READERS:
        _wait(partial(broker.subscribed, f"reader-{kind}"), f"{kind} to subscribe")


def _publish(port: int, qos: int, files: list[Path], children: list[subprocess.Popen[bytes]]) -> None:
    """Run one `mosquitto_pub -l` per file, all at once, to their end."""
    pubs = [subprocess.Popen([_program("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv311",
                              "-q", str(qos), "--nodelay", "-t", f"bench/v1/vehicles/car-{p:04d}/status", "-l"],
                             stdin=path.open("rb")) for p, path in enumerate(files)]
    children += pubs
    for pub in pubs:
        if pub.wait(300) != 0:
            raise SystemExit(f"bulk_read: a mosquitto_pub failed (exit {pub.returncode})")


def _ended(children: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """The wall time of each reader's last message."""
    ended = {}
    for kind, child in zip(READERS, children, strict=False):
        try:
            out, _ = child.communicate(timeout=READ_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"bulk_read: the {kind} reader still lacked messages {READ_TIMEOUT_S} s after "
                             "the publishers ended (did the broker drop a publisher? see its log above)") from None
        if child.returncode != 0:
            raise SystemExit(f"bulk_read: the {kind} reader did not get every message")
        ended[kind] = float(out.split()[-1]) if kind != "mosquitto_sub" else time.time()
    return ended


def run(n: int, publishers: int, qos: int, directory: Path) -> dict[str, float]:
    """Every reader's rate in msg/s on one stream of `n` messages."""
    payload = telemetry().model_dump_json()
    files = [directory / f"pub{p}.txt" for p in range(publishers)]
    for path in files:
        path.write_text(f"{payload}\n" * (n // publishers))
    n = n // publishers * publishers
    broker = Broker(directory)
    children: list[subprocess.Popen[bytes]] = []
    try:
        _wait(partial(_accepts, broker.port), "mosquitto to start")
        _start_readers(broker, n, qos, children)
        sub_done: list[float] = []  # mosquitto_sub's end, seen by a thread as it happens
        waiter = threading.Thread(target=lambda: sub_done.append(time.time()) if children[2].wait() == 0 else None,
                                  daemon=True)
        waiter.start()
        start = time.time()
        _publish(broker.port, qos, files, children)
        ended = _ended(children[:2])
        waiter.join(READ_TIMEOUT_S)
        if not sub_done:
            raise SystemExit("bulk_read: mosquitto_sub did not get every message")
        ended["mosquitto_sub"] = sub_done[0]
    except BaseException:
        print(broker.log.read_text(errors="replace")[-2000:], file=sys.stderr)
        raise
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        broker.stop()
    return {kind: n / (ended[kind] - start) for kind in READERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer messages (under a minute)")
    parser.add_argument("--messages", type=int, help="messages in the stream (default 600,000; quick 150,000)")
    parser.add_argument("--publishers", type=int, default=2, help="mosquitto_pub processes (default 2)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0,
                        help="the stream's QoS (default 0: the fastest stream Mosquitto makes here; at QoS 1 "
                             "the broker's own acknowledgements limit it)")
    parser.add_argument("--reader", choices=("bulk", "aiomqtt"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.messages or (150_000 if args.quick else 600_000)
    if args.reader:
        reader_main(args.reader, args.port, n, args.qos)
        return
    if n < 1 or args.publishers < 1:
        parser.error("--messages and --publishers must be at least 1")
    publishers = args.publishers if args.qos == 0 else max(args.publishers, -(-n // MAX_PER_QOS1_PUBLISHER))
    with tempfile.TemporaryDirectory(prefix="bench-bulk-read-") as tmp:
        rates = run(n, publishers, args.qos, Path(tmp))
    print(f"{n:,} messages from {publishers} mosquitto_pub at QoS {args.qos}, three readers, loopback, one run")
    bulk, aio, ref = rates["bulk"], rates["aiomqtt"], rates["mosquitto_sub"]
    print(f"bulk_read: {bulk:,.0f} msg/s BulkLink; ratio {bulk / ref:.2f} vs mosquitto_sub ({ref:,.0f} msg/s); "
          f"aiomqtt {aio:,.0f} msg/s")


if __name__ == "__main__":
    main()
