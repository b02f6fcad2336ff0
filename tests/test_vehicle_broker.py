"""`fleetroom vehicles` as a real process on real brokers, with this test playing the dispatcher."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import aiomqtt
import pytest

from mqttlink import client_id_of, make_client
from protocol import (
    AnyMessage,
    ComputeOffer,
    ConnectionStatus,
    DriveAway,
    Liveness,
    ProtocolError,
    ShardAssignment,
    ShardPreempted,
    ShardProgress,
    ShardRefused,
    ShardResult,
    VehicleStatus,
    decode,
    encode,
    utc_now,
)
from protocol.frames import FRAME_CHANNELS, CarRoster, OfferFrame, decode_frame
from protocol.topics import DELIVERY, Channel, Topics
from tests.support.brokers import TestBroker, embedded_broker
from tests.support.demo_loadtest import child, clean_env
from tests.support.waiting import wait_until

SIM_START = "2026-11-30T10:00:00Z"  # a Monday morning: commuters have just parked at work
M = TypeVar("M")


class Dispatcher:
    """The test's stand-in for the dispatcher: sees everything, sends assignments.

    A gateway's frames are read as what they stand for: each roster entry as the car's
    `VehicleStatus`, each item of an offer frame as the car's own offer or withdrawal.
    """

    def __init__(self, client: aiomqtt.Client, broker: TestBroker) -> None:
        self.client, self.topics = client, broker.topics
        self.seen: list[tuple[str, AnyMessage]] = []
        self.delivered: list[tuple[Channel, int]] = []  # each message's channel and QoS, as delivered

    async def read(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            topic = str(message.topic)
            channel = self.topics.parse(topic).channel
            self.delivered.append((channel, message.qos))
            try:
                if channel in FRAME_CHANNELS:
                    self.seen += unpacked(topic, decode_frame(channel, message.payload))
                else:
                    self.seen.append((topic, decode(message.payload)))
            except ProtocolError as exc:  # pragma: no cover - would fail the assertions below
                raise AssertionError(f"the fleet sent an invalid message on {message.topic}: {exc}") from None

    def of(self, kind: type[M], where: Callable[[M], bool] = lambda m: True) -> list[M]:
        return [m for _, m in self.seen if isinstance(m, kind) and where(m)]

    async def assign(self, offer: ComputeOffer, assignment_id: str, work_s: float, **extra: object) -> None:
        now = utc_now()
        fields: dict[str, object] = dict(
            sender="dispatcher", sent_at=now, sim_time=now, assignment_id=assignment_id,
            vehicle_id=offer.sender, job_id="job-1", shard_id=f"sh-{assignment_id}",
            work_tera_ops=offer.free_tops * work_s, input_digest="ab" * 32, allocated_tops=offer.free_tops,
            checkpoint_interval_s=120.0, price_per_tops_hour=offer.price_per_tops_hour,
        )
        fields.update(extra)
        message = ShardAssignment(**fields)  # type: ignore[arg-type]
        await self.client.publish(self.topics.commands(offer.sender), encode(message), qos=1)


def unpacked(topic: str, frame: CarRoster | OfferFrame) -> list[tuple[str, AnyMessage]]:
    """The per-car messages a frame stands for (each on the frame's topic)."""
    if isinstance(frame, OfferFrame):
        return [(topic, item) for item in frame.offers]
    return [(topic, VehicleStatus(sender=car.vehicle_id, sent_at=frame.sent_at, sim_time=frame.sim_time,
                                  state=car.state, hardware=car.hardware, gateway=frame.sender, reason=car.reason,
                                  owner_id=car.owner_id, owner_mode=car.owner_mode)) for car in frame.cars]


@asynccontextmanager
async def dispatcher(broker: TestBroker) -> AsyncIterator[Dispatcher]:
    async with make_client(broker.url("dispatcher"), client_id_of(broker.url("dispatcher"), "dispatcher")) as client:
        await client.subscribe(broker.topics.everything, qos=1)
        d = Dispatcher(client, broker)
        reader = asyncio.create_task(d.read())
        try:
            yield d
        finally:
            reader.cancel()


def fleet_command(broker: TestBroker, *args: str) -> list[str]:
    return [sys.executable, "-m", "fleetroom", "vehicles", "--broker", f"mqtt://127.0.0.1:{broker.port}",
            "--topic-prefix", broker.topics.prefix, "--sim-start", SIM_START, *args]


@asynccontextmanager
async def fleet_process(broker: TestBroker, tmp_path: Path, *args: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    async with child(fleet_command(broker, *args), tmp_path, tmp_path / "fleet.log") as proc:
        yield proc


def best_offer(d: Dispatcher, exclude: set[str] = frozenset()) -> ComputeOffer:  # type: ignore[assignment]
    offers = d.of(ComputeOffer, lambda o: o.sender not in exclude)
    return max(offers, key=lambda o: o.expected_departure)


async def test_cars_offer_run_shards_get_preempted_and_leave_a_last_will(
    any_broker: TestBroker, tmp_path: Path
) -> None:
    async with dispatcher(any_broker) as d, fleet_process(
        any_broker, tmp_path, "--count", "6", "--mode", "per-car", "--speed", "300", "--seed", "5"
    ) as proc:
        await wait_until(lambda: len(d.of(VehicleStatus, lambda s: s.state == "online")) >= 6, 20, "6 cars online")
        await wait_until(lambda: len(d.of(ComputeOffer)) >= 2, 20, "two compute offers")
        assert all(s.gateway is None for s in d.of(VehicleStatus))  # per-car mode: each car is its own client
        first = best_offer(d)
        await d.assign(first, "as-1", work_s=600)
        await wait_until(lambda: d.of(ShardResult), 20, "the shard's result")
        (result,) = d.of(ShardResult)
        assert result.sender == first.sender and result.assignment_id == "as-1"
        assert result.result_digest == hashlib.sha256(f"{'ab' * 32}:sh-as-1".encode()).hexdigest()
        progress = d.of(ShardProgress, lambda p: p.assignment_id == "as-1")
        assert len(progress) >= 3 and progress[-1].checkpoint_tera_ops > 0  # an ack, then checkpoints

        second = best_offer(d, exclude={first.sender})
        await d.assign(second, "as-wrong", work_s=60, vehicle_id=first.sender)  # on second's topic, not for it
        await wait_until(lambda: d.of(ShardRefused), 20, "a refusal")
        assert "not addressed" in d.of(ShardRefused)[0].reason

        await d.assign(second, "as-2", work_s=100_000)
        await wait_until(lambda: d.of(ShardProgress, lambda p: p.assignment_id == "as-2" and p.done_tera_ops > 0),
                         20, "a checkpoint of the long shard")
        now = utc_now()
        drive_away = DriveAway(sender="operator", sent_at=now, sim_time=now, vehicle_id=second.sender)
        await d.client.publish(any_broker.topics.fleet_control, encode(drive_away), qos=1)
        await wait_until(lambda: d.of(ShardPreempted), 20, "the preemption")
        (pre,) = d.of(ShardPreempted)
        assert pre.assignment_id == "as-2" and pre.checkpoint_tera_ops > 0
        assert pre.work_tera_ops == pytest.approx(pre.checkpoint_tera_ops)

        proc.kill()  # no goodbye: the broker must publish every car's Last Will
        await wait_until(lambda: len(d.of(VehicleStatus, lambda s: s.state == "offline")) >= 6, 20, "6 Last Wills")


async def retained_channels(broker: TestBroker) -> set[Channel]:
    """The channels of the messages a broker keeps under the test's root, as a new subscriber receives them."""
    url = broker.url("observer")
    kept: set[Channel] = set()
    marker = f"{broker.topics.root}/marker"
    async with make_client(url, client_id_of(url, "observer")) as client:
        await client.subscribe(broker.topics.everything, qos=1)
        await client.publish(marker, b"after the retained ones", qos=1)
        async for message in client.messages:
            if str(message.topic) == marker:
                return kept
            if message.retain:  # kept by the broker, not published since (the fleet still runs)
                kept.add(broker.topics.parse(str(message.topic)).channel)
    raise AssertionError("the subscription ended before the marker came back")


async def test_the_fleet_publishes_every_channel_with_the_qos_and_retain_flag_of_delivery(
    any_broker: TestBroker, tmp_path: Path
) -> None:
    """`protocol.topics.DELIVERY` is what the fleet does: a new subscriber gets exactly the retained channels,
    and on Mosquitto a QoS 1 subscriber receives each channel at the QoS it was published with. A gateway
    says its cars' statuses and offers only in frames; telemetry and shard messages stay per car."""
    published = {Channel.ROSTER, Channel.TELEMETRY, Channel.OFFER_FRAME, Channel.SHARDS, Channel.CONNECTION_STATUS}
    async with dispatcher(any_broker) as d, fleet_process(
        any_broker, tmp_path, "--count", "6", "--mode", "gateway", "--speed", "300", "--seed", "5"
    ):
        await wait_until(lambda: d.of(ComputeOffer), 20, "an offer")
        await d.assign(best_offer(d), "as-1", work_s=60)
        await wait_until(lambda: published <= {channel for channel, _ in d.delivered}, 20, "every channel of the fleet")
        kept = await retained_channels(any_broker)
        assert not {Channel.VEHICLE_STATUS, Channel.OFFER} & {channel for channel, _ in d.delivered}
        assert {c.frames for c in d.of(ConnectionStatus, lambda c: c.role == "gateway")} == {True}
    assert kept == {channel for channel in published if DELIVERY[channel].retain}
    if any_broker.kind == "mosquitto":  # amqtt delivers at the subscription's QoS, whatever the publisher's
        qos_by_channel = {channel: {qos for c, qos in d.delivered if c is channel} for channel in published}
        assert qos_by_channel == {channel: {DELIVERY[channel].qos} for channel in published}


async def test_gateway_mode_says_goodbye_on_sigterm_and_leaves_a_will_when_killed(
    amqtt_broker: TestBroker, tmp_path: Path
) -> None:
    b = amqtt_broker
    async with dispatcher(b) as d:
        async with fleet_process(b, tmp_path, "--count", "30", "--mode", "gateway", "--speed", "120") as proc:
            await wait_until(lambda: len(d.of(VehicleStatus)) >= 30, 20, "30 cars online")
            (gw,) = {s.gateway for s in d.of(VehicleStatus)}
            assert gw is not None and gw.startswith("gw-")
            await wait_until(lambda: d.of(ConnectionStatus, lambda c: c.state == "online" and c.vehicle_count == 30),
                             20, "the gateway's heartbeat counting its 30 cars")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 20) == 0
        await wait_until(lambda: len({s.sender for s in d.of(VehicleStatus, lambda s: s.state == Liveness.OFFLINE)})
                         == 30, 20, "30 offline statuses")
        assert d.of(ConnectionStatus, lambda c: c.state == "offline" and c.sender == gw)
        d.seen.clear()
        async with fleet_process(b, tmp_path, "--count", "30", "--mode", "gateway", "--speed", "120") as proc:
            await wait_until(lambda: d.of(ConnectionStatus, lambda c: c.state == "online"), 20, "the gateway again")
            proc.kill()
            await wait_until(lambda: d.of(ConnectionStatus, lambda c: c.state == "offline"), 20, "the gateway's Will")


async def test_each_car_logs_in_as_itself_on_a_secured_broker(topics: Topics, tmp_path: Path) -> None:
    secret = b"vehicles-test-secret"
    (tmp_path / "secret").write_bytes(secret + b"\n")
    async with embedded_broker(topics, secret) as broker, dispatcher(broker) as d, fleet_process(
        broker, tmp_path, "--count", "4", "--mode", "per-car", "--secret-file", str(tmp_path / "secret")
    ) as proc:
        await wait_until(lambda: len(d.of(VehicleStatus)) >= 4, 20, "4 cars logged in under their own names")
        await wait_until(lambda: d.of(ComputeOffer), 20, "an offer through the ACL")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        def goodbyes() -> int:
            return len({s.sender for s in d.of(VehicleStatus, lambda s: s.reason == "fleet process stopped")})

        await wait_until(lambda: goodbyes() == 4, 20, "each car's goodbye over its own connection")
        (tmp_path / "wrong").write_bytes(b"not-the-fleet-secret\n")
        done = await asyncio.to_thread(
            subprocess.run, [*fleet_command(broker, "--count", "2", "--secret-file", str(tmp_path / "wrong"))],
            cwd=tmp_path, capture_output=True, text=True, timeout=30,
        )
        assert done.returncode == 2 and "refused the login" in done.stderr, done.stderr


def test_bad_flags_and_an_unreachable_broker_are_one_line_errors(tmp_path: Path) -> None:
    env = clean_env()
    base = [sys.executable, "-m", "fleetroom", "vehicles"]
    cases = [
        ["--count", "5", "--hardware-mix", "HW9=1"],
        ["--count", "5", "--shard", "2/2"],
        ["--count", "five"],
        ["--count", "5", "--inject-faults", "gremlins"],
        ["--count", "5", "--broker", "mqtt://127.0.0.1:1", "--duration", "1"],
    ]
    for args in cases:
        done = subprocess.run(base + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
    users = tmp_path / "users.txt"
    done = subprocess.run([*base, "--count", "10", "--shard", "1/2", "--mode", "per-car", "--write-users", str(users)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    names = users.read_text().split()
    assert names[0] == "gw-1-1-2" and len(names) == 6 and all(n.startswith("car-") for n in names[1:])


@pytest.mark.parametrize("mode", ["per-car", "gateway"])
async def test_cars_come_back_after_the_broker_restarts(amqtt_broker: TestBroker, tmp_path: Path, mode: str) -> None:
    async with fleet_process(amqtt_broker, tmp_path, "--count", "4", "--mode", mode, "--speed", "120"):
        async with dispatcher(amqtt_broker) as d:
            await wait_until(lambda: len(d.of(VehicleStatus)) >= 4, 20, "4 cars online")
        await amqtt_broker.restart()  # amqtt keeps nothing: retained statuses are gone
        async with dispatcher(amqtt_broker) as d:
            await wait_until(lambda: len({s.sender for s in d.of(VehicleStatus, lambda s: s.reason == "reconnected")})
                             == 4, 30, "4 cars announcing themselves again")
            await wait_until(lambda: d.of(ComputeOffer), 20, "offers again")


async def test_the_fleet_grows_over_wall_time(amqtt_broker: TestBroker, tmp_path: Path) -> None:
    async with dispatcher(amqtt_broker) as d, fleet_process(
        amqtt_broker, tmp_path, "--count", "5", "--grow-to", "25", "--grow-over", "1", "--mode", "gateway"
    ):
        await wait_until(lambda: len({s.sender for s in d.of(VehicleStatus)}) == 25, 20, "25 cars after growing")


@pytest.mark.parametrize("mode", ["gateway", "per-car"])
async def test_cars_announce_again_when_a_dispatcher_comes_online_after_them(
    amqtt_broker: TestBroker, tmp_path: Path, mode: str
) -> None:
    """After a broker restart the fleet may reconnect before the dispatcher; offers are not retained,
    so the fleet announces its cars again when it sees the dispatcher's status come online."""
    b = amqtt_broker
    async with dispatcher(b) as d, fleet_process(b, tmp_path, "--count", "8", "--mode", mode, "--seed", "3"):
        await wait_until(lambda: len({s.sender for s in d.of(VehicleStatus)}) >= 8, 20, "8 cars online")
        await wait_until(lambda: d.of(ComputeOffer), 20, "the first offers")
        offering = {o.sender for o in d.of(ComputeOffer)}
        d.seen.clear()
        # a dispatcher that comes online now hears every car again, with its standing offer
        now = utc_now()
        fresh = ConnectionStatus(sender="dispatcher", sent_at=now, sim_time=now, role="dispatcher",
                                 state=Liveness.ONLINE)
        await d.client.publish(b.topics.connection_status("dispatcher"), encode(fresh), qos=1, retain=True)
        await wait_until(lambda: len({s.sender for s in d.of(VehicleStatus)}) >= 8, 20, "8 statuses again")
        await wait_until(lambda: offering <= {o.sender for o in d.of(ComputeOffer)}, 20, "the offers again")


def gateway_statuses(d: Dispatcher) -> list[ConnectionStatus]:
    return d.of(ConnectionStatus, lambda c: c.role == "gateway")


@pytest.mark.parametrize("mode", ["gateway", "per-car"])
async def test_a_second_fleet_with_the_same_seed_says_so_and_leaves_the_first_alone(
    any_broker: TestBroker, tmp_path: Path, mode: str
) -> None:
    """Client ids are no longer the seed's: the second fleet must find the first by its status, say so in
    one line and exit 2, without kicking it off or leaving a Last Will that marks its cars offline."""
    b = any_broker
    flags = ("--count", "6", "--mode", mode, "--seed", "9", "--speed", "120")
    (tmp_path / "first").mkdir()
    async with dispatcher(b) as d, fleet_process(b, tmp_path / "first", *flags, "-v") as first:
        await wait_until(lambda: len({s.sender for s in d.of(VehicleStatus)}) >= 6, 20, "6 cars online")
        await wait_until(lambda: bool(gateway_statuses(d)), 20, "the first fleet's process status")
        (ours,) = {c.instance for c in gateway_statuses(d)}
        assert {c.sender for c in gateway_statuses(d)} == {"gw-9-0-1"}
        second = await asyncio.to_thread(
            subprocess.run, fleet_command(b, *flags, "--duration", "20"), cwd=tmp_path, capture_output=True,
            text=True, timeout=60,
        )
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines() == [
            "fleetroom vehicles: error: another fleet process is running as gw-9-0-1: start this one with "
            "another --seed or --shard"]
        seen = len(gateway_statuses(d))
        await wait_until(lambda: len(gateway_statuses(d)) > seen, 20, "the first fleet's next heartbeat")
        assert first.poll() is None
        assert {(c.instance, c.state) for c in gateway_statuses(d)} == {(ours, Liveness.ONLINE)}
        assert not d.of(VehicleStatus, lambda s: s.state != Liveness.ONLINE)  # no car was said to be gone
    log = (tmp_path / "first" / "fleet.log").read_text()
    assert "connection lost" not in log and "reconnected" not in log, log[-2000:]


async def test_a_fleet_that_finds_a_live_rival_later_stops_without_a_trace(
    amqtt_broker: TestBroker, tmp_path: Path
) -> None:
    """Two fleets that claimed the same name at once (a race): the later-started one gives way."""
    b = amqtt_broker
    async with dispatcher(b) as d, fleet_process(b, tmp_path, "--count", "4", "--mode", "gateway",
                                                   "--seed", "4") as proc:
        await wait_until(lambda: len({s.sender for s in d.of(VehicleStatus)}) >= 4, 20, "4 cars online")
        await wait_until(lambda: bool(gateway_statuses(d)), 20, "the fleet's process status")
        (ours,) = {c.instance for c in gateway_statuses(d)}
        now = utc_now()
        younger = ConnectionStatus(sender="gw-4-0-1", sent_at=now, sim_time=now, role="gateway",
                                   state=Liveness.ONLINE, instance="ffffffffffff.00000000")
        await d.client.publish(b.topics.connection_status("gw-4-0-1"), encode(younger), qos=1)
        await wait_until(lambda: any(c.instance == ours and c.sent_at > now for c in gateway_statuses(d)), 20,
                         "the older fleet to say again that it holds the name")
        assert proc.poll() is None
        older = younger.model_copy(update={"instance": "000000000001.00000000", "sent_at": utc_now()})
        d.seen.clear()
        await d.client.publish(b.topics.connection_status("gw-4-0-1"), encode(older), qos=1)
        assert await asyncio.to_thread(proc.wait, 20) == 2
    assert not d.of(VehicleStatus, lambda s: s.state != Liveness.ONLINE), "it said goodbye for cars not its own"
    assert not [c for c in gateway_statuses(d) if c.instance == ours], "it left its Will or a status behind"
    log = (tmp_path / "fleet.log").read_text()
    assert "another fleet process is running as gw-4-0-1" in log and "Traceback" not in log


async def test_a_fleet_restarted_at_once_after_a_kill_is_not_taken_for_a_rival(
    any_broker: TestBroker, tmp_path: Path
) -> None:
    b = any_broker
    flags = ("--count", "3", "--mode", "gateway", "--seed", "8")
    async with dispatcher(b) as d:
        async with fleet_process(b, tmp_path, *flags) as proc:
            await wait_until(lambda: bool(gateway_statuses(d)), 20, "the fleet's process status")
            proc.kill()
        await wait_until(lambda: any(c.state == Liveness.OFFLINE for c in gateway_statuses(d)), 20, "its Will")
        d.seen.clear()
        async with fleet_process(b, tmp_path, *flags) as proc:
            await wait_until(lambda: any(c.state == Liveness.ONLINE for c in gateway_statuses(d)), 20,
                             "the restarted fleet online")
            assert proc.poll() is None
