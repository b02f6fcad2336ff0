"""The scale benchmarks' own parts: their publishers speak MQTT a real broker takes, and their arithmetic."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.support.feeds import cars_per_frame, frame_stream, per_car_stream, renumbered
from bench.support.stack import FleetMetrics, essay_fleet_flags, rate_over, reached_at
from protocol.codec import decode_on
from protocol.frames import CarRoster, OfferFrame, decode_frame
from protocol.topics import Channel, Topics
from tests.support.brokers import free_port, mosquitto_broker, mosquitto_program
from tests.support.waiting import wait_until

INGEST = Path(__file__).resolve().parent.parent / "bench" / "ingest.py"
SIM = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def split_publish(packet: bytes) -> tuple[str, int, bytes]:
    """(topic, packet id, payload) of one QoS 1 PUBLISH packet."""
    assert packet[0] >> 4 == 3 and (packet[0] >> 1) & 3 == 1
    length, shift, i = 0, 0, 1
    while True:
        length |= (packet[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not packet[i - 1] & 0x80:
            break
    assert len(packet) == i + length
    n = int.from_bytes(packet[i:i + 2], "big")
    topic = packet[i + 2:i + 2 + n].decode()
    return topic, int.from_bytes(packet[i + 2 + n:i + 4 + n], "big"), packet[i + 4 + n:]


def test_offer_frames_get_fresh_sequence_numbers_every_round(topics: Topics) -> None:
    stream = frame_stream(topics, "gw-bench-0", 0, 1000, SIM)
    per_cycle = renumbered(stream)
    seqs = []
    for cycle in range(2):
        for packet in per_cycle(cycle):
            topic, pid, payload = split_publish(packet)
            assert pid > 0
            if topic == topics.offer_frames("gw-bench-0"):
                frame = decode_frame(Channel.OFFER_FRAME, payload)
                assert isinstance(frame, OfferFrame)
                seqs.append(frame.seq)
            else:
                assert isinstance(decode_frame(Channel.ROSTER, payload), CarRoster)
    assert seqs == list(range(6))  # 1,000 cars: three frames of up to 400 offers a round
    assert cars_per_frame(1000) == pytest.approx(2000 / 5)  # two roster blocks and three offer frames


def test_the_per_car_stream_is_what_the_topic_map_accepts(topics: Topics) -> None:
    stream = per_car_stream(topics, 5, 3, SIM)
    assert [decode_on(topics, topic, payload)[0].vehicle_id for topic, payload, _, _ in stream] == [
        "car-0000005", "car-0000005", "car-0000006", "car-0000006", "car-0000007", "car-0000007"]
    assert [(qos, retain) for _, _, qos, retain in stream[:2]] == [(1, True), (1, False)]


def test_a_count_reaches_its_target_between_two_samples() -> None:
    samples = [(10.0, 0), (11.0, 400), (12.0, 1000)]
    assert reached_at(samples, 700) == pytest.approx(11.5)
    assert reached_at(samples, 0) == 10.0
    assert reached_at(samples, 1001) is None
    assert rate_over([(0.5, 0), *samples, (13.0, 1000)], 10.0, 12.0) == pytest.approx(500)


@pytest.mark.parametrize("frames", [False, True], ids=["per-car", "frames"])
async def test_a_publisher_child_is_read_back_from_mosquitto(topics: Topics, tmp_path: Path, frames: bool) -> None:
    sub = mosquitto_program("mosquitto_sub")
    async with mosquitto_broker(topics, tmp_path) as broker:
        role = "publish-frames" if frames else "publish"
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, str(INGEST), "--_child", role, str(broker.port), topics.prefix, "0", "10",
            SIM.isoformat(), "0.5", stdout=subprocess.DEVNULL)
        assert await asyncio.wait_for(publisher.wait(), 60) == 0
        # what stays retained tells what was published: ten statuses, or one roster of ten cars
        retained = topics.all_rosters if frames else topics.all_vehicles(Channel.VEHICLE_STATUS)
        count = 1 if frames else 10
        out = await asyncio.create_subprocess_exec(
            sub, "-h", "127.0.0.1", "-p", str(broker.port), "-t", retained, "-v", "-C", str(count), "-W", "20",
            stdout=subprocess.PIPE)
        lines = (await asyncio.wait_for(out.communicate(), 30))[0].decode().splitlines()
    assert len(lines) == count
    for line in lines:
        topic, payload = line.split(" ", 1)
        if frames:
            roster = decode_frame(Channel.ROSTER, payload.encode())
            assert isinstance(roster, CarRoster)
            assert topic == topics.roster(roster.sender, 0) and len(roster.cars) == 10
        else:
            decode_on(topics, topic, payload.encode())


async def test_the_fleet_only_reference_reads_a_real_fleets_join(topics: Topics, tmp_path: Path) -> None:
    async with mosquitto_broker(topics, tmp_path) as broker:
        port = free_port()
        clock = ["--speed", "60", "--sim-start", SIM.isoformat()]
        fleet = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleetroom", "vehicles", "--broker", f"mqtt://127.0.0.1:{broker.port}",
            "--topic-prefix", topics.prefix, "--metrics-port", str(port),
            *essay_fleet_flags(1200, 1, 0, clock, 60.0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        metrics = FleetMetrics([port])
        try:
            await wait_until(lambda: reached_at(list(metrics.samples), 1200) is not None, 60, "1,200 cars joined")
        finally:
            metrics.close()
            fleet.terminate()
            await fleet.wait()
    joined_at = reached_at(list(metrics.samples), 1200)
    assert joined_at is not None and joined_at <= time.time()
    assert metrics.samples[-1][1] == 1200  # cars known summed over the processes, from their own /metrics
