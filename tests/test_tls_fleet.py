"""The fleet's paho connections over TLS: both brokers, per-car certificates, handshakes in the
fleet's own selector, and bytes an SSL socket decrypted ahead of select()."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.tls import TlsFiles, ensure_server_files, issue_client_cert
from broker.tls import server_ssl_context as make_server_context
from fake_vehicles import network
from fake_vehicles.network import Link, Net
from mqttlink import BrokerUrl
from protocol.topics import Topics
from tests.support.brokers import require_mosquitto
from tests.support.tls import KINDS, SECRET, subscribed, tls_broker


@pytest.fixture(autouse=True)
def _clients_the_project_did_not_write() -> None:
    """These tests check the brokers with Mosquitto's own tools: fail loud if they are missing."""
    require_mosquitto()


def drive(net: Net, until: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Run the fleet's selector loop until `until()` (the fleet's thread does this)."""
    end = time.monotonic() + timeout
    while not until():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        net.poll(0.02)


def publish_with_links(urls: dict[str, BrokerUrl], topics: Topics) -> None:
    """Connect one Link per car, publish each car's retained status (QoS 1), wait for the acknowledgements."""
    net = Net()
    links = {name: net.add(Link(net, url, name)) for name, url in urls.items()}
    for link in links.values():
        link.start()
    drive(net, lambda: all(link.connected or link.refusal for link in links.values()), "the connections")
    refused = {name: link.refusal for name, link in links.items() if link.refusal}
    assert not refused, refused
    for name, link in links.items():
        link.publish(topics.vehicle_status(name), b"online-over-tls", qos=1, retain=True)
    net.flush()
    drive(net, lambda: all(link.prune_acked() == 0 for link in links.values()), "the acknowledgements")
    for link in links.values():
        link.close()
    net.flush()


@pytest.mark.parametrize("kind", KINDS)
async def test_the_fleet_connects_and_publishes_over_tls(kind: str, topics: Topics, tmp_path: Path) -> None:
    async with tls_broker(kind, topics, tmp_path) as broker, subscribed(broker.client_flags(),
                                                                        topics.all_vehicles()) as sub:
        await asyncio.to_thread(publish_with_links, {"car-aa": broker.url()}, topics)
        await sub.until(lambda line: line == f"{topics.vehicle_status('car-aa')} online-over-tls", "the status")


@pytest.mark.parametrize("kind", KINDS)
async def test_each_car_of_the_fleet_logs_in_with_its_own_certificate(
    kind: str, topics: Topics, tmp_path: Path
) -> None:
    secret = SECRET if kind == "amqtt" else None
    async with tls_broker(kind, topics, tmp_path, secret=secret, require_client_cert=True) as broker:
        for name in ("car-aa", "car-bb", "observer"):
            issue_client_cert(tmp_path / "tls", name)
        clients = tmp_path / "tls" / "clients"
        async with subscribed(broker.client_flags("observer", "observer"), topics.all_vehicles()) as sub:
            urls = {name: broker.url(name, cert=clients) for name in ("car-aa", "car-bb")}
            await asyncio.to_thread(publish_with_links, urls, topics)
            for name in urls:
                await sub.until(lambda line, n=name: line.startswith(topics.vehicle_status(n)), f"{name}'s status")


async def test_the_fleet_says_in_one_line_that_a_certificate_is_wrong(topics: Topics, tmp_path: Path) -> None:
    other, _ = ensure_server_files(tmp_path / "other-ca")
    async with tls_broker("amqtt", topics, tmp_path) as broker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleetroom", "vehicles", "--count", "1", "--duration", "5",
            "--broker", f"mqtts://127.0.0.1:{broker.port}", "--ca-file", str(other.ca_cert),
            "--topic-prefix", topics.prefix, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("fleetroom vehicles: error: TLS with the MQTT broker at mqtts://")
    assert "failed: the broker's certificate is not signed by the CA" in lines[0]
    assert "certificate verify failed" in lines[0]


class FakeTlsBroker(threading.Thread):
    """Just enough of an MQTT broker over TLS: answers CONNECT with a CONNACK and `count` PUBLISHes in one TLS record.

    With `silent`, it accepts TCP connections and never answers the TLS handshake.
    """

    def __init__(self, files: TlsFiles, count: int = 0, *, silent: bool = False) -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.files, self.count, self.silent = files, count, silent
        self.done = threading.Event()

    def run(self) -> None:
        if self.silent:
            self.done.wait()
            return
        conn, _ = self.server.accept()
        with make_server_context(self.files).wrap_socket(conn, server_side=True) as tls:
            tls.recv(1024)  # the CONNECT
            publish = b"\x30" + bytes([2 + 5 + 7]) + b"\x00\x05t/abc" + b"payload"
            tls.sendall(b"\x20\x02\x00\x00" + publish * self.count)  # one write: one TLS record
            self.done.wait(15)

    def close(self) -> None:
        self.done.set()
        self.server.close()


def test_bytes_decrypted_ahead_are_read_without_waiting_for_the_socket(tmp_path: Path) -> None:
    files, _ = ensure_server_files(tmp_path)
    fake = FakeTlsBroker(files, count=50)
    fake.start()
    got: list[str] = []
    net = Net()
    url = BrokerUrl("127.0.0.1", fake.port, tls=True, ca_file=str(files.ca_cert))
    link = net.add(Link(net, url, "car-aa", on_message=lambda topic, _payload, _retained: got.append(topic)))
    try:
        link.start()
        # once the CONNACK is read, the 50 PUBLISHes are already decrypted inside the SSL object:
        # select() sees nothing more on the socket, so only `pending()` tells that they are there
        drive(net, lambda: len(got) == 50, "the 50 messages of the one TLS record", timeout=5)
    finally:
        fake.close()
        link.close()


def test_a_tls_handshake_does_not_hold_up_the_fleets_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, _ = ensure_server_files(tmp_path)
    fake = FakeTlsBroker(files, silent=True)
    fake.start()
    monkeypatch.setattr(network, "HANDSHAKE_TIMEOUT_S", 0.3)
    net = Net()
    url = BrokerUrl("127.0.0.1", fake.port, tls=True, ca_file=str(files.ca_cert))
    link = net.add(Link(net, url, "car-aa"))
    try:
        started = time.monotonic()
        link.start()
        assert time.monotonic() - started < 1.0  # paho alone would wait here up to its 5 s connect timeout
        drive(net, lambda: link in net.lost, "the handshake to be given up and retried later", timeout=5)
        assert link.refusal is None and not link.connected
    finally:
        fake.close()


