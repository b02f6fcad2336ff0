"""The fleet core without a network: messages out, commands in, shards run in simulated time."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime

import pytest

from fake_vehicles.car import Defect
from fake_vehicles.commands import CommandHandler
from fake_vehicles.fleet import Fleet, FleetConfig, LinkEvent
from fake_vehicles.messages import Encoder
from protocol.codec import decode, encode
from protocol.fleet_messages import AddCars, DriveAway
from protocol.job_messages import ShardAssignment, ShardCancel, ShardPreempted, ShardProgress, ShardRefused, ShardResult
from protocol.topics import Topics
from protocol.vehicle_messages import (
    ComputeOffer,
    ConnectionStatus,
    Liveness,
    OfferWithdrawal,
    VehicleStatus,
    VehicleTelemetry,
)

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC).timestamp()
WALL = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
TOPICS = Topics("corefleet")


def make_fleet(count: int = 60, seed: int = 3, **config: object) -> Fleet:
    fleet = Fleet(FleetConfig(seed=seed, count=count, **config),  # type: ignore[arg-type]
                  Encoder(TOPICS, 0.0, None), random.Random(seed))
    fleet.encoder.stamp(WALL, T0)
    fleet.join(T0, count)
    return fleet


def drain_raw(fleet: Fleet) -> list[tuple[str, bytes]]:
    out = []
    while fleet.outbox:
        _, _, topic, payload = fleet.outbox.popleft()
        out.append((topic, payload))
    return out


def drain(fleet: Fleet) -> list[tuple[str, object]]:
    return [(topic, decode(payload)) for topic, payload in drain_raw(fleet)]


def inbound(fleet: Fleet, heard: list[object] | None = None) -> CommandHandler:
    """The fleet's command handler; the statuses it hands to its owner are appended to `heard`."""
    out = heard if heard is not None else []
    return CommandHandler(fleet, on_dispatcher_online=lambda sent_at: out.append(sent_at),
                          on_gateway_status=lambda status, retained: out.append((status.sender, retained)))


def run_until(fleet: Fleet, t: float, step: float = 10.0) -> list[tuple[str, object]]:
    out = []
    now = fleet.t or T0
    while now < t:
        now = min(t, now + step)
        fleet.encoder.stamp(WALL, now)
        fleet.advance(now)
        fleet.sweep(now, 10_000)
        out += drain(fleet)
    return out


def assignment(fleet: Fleet, vid: str, work_s: float, **extra: object) -> ShardAssignment:
    car = fleet.by_id[vid]
    fields: dict[str, object] = dict(
        sender="dispatcher", sent_at=WALL, sim_time=WALL, assignment_id="as-1", vehicle_id=vid, job_id="job-1",
        shard_id="sh-1", work_tera_ops=car.hardware.tops * work_s, input_digest="0f" * 32,
        allocated_tops=car.hardware.tops, checkpoint_interval_s=60.0, price_per_tops_hour=1.0,
    )
    fields.update(extra)
    return ShardAssignment(**fields)  # type: ignore[arg-type]


def send(fleet: Fleet, message: ShardAssignment | ShardCancel, vid: str | None = None) -> None:
    inbound(fleet).handle(TOPICS.commands(vid or message.vehicle_id), encode(message), fleet.t)


def an_offering_car(fleet: Fleet) -> str:
    out = run_until(fleet, T0 + 300)
    offers = [m for _, m in out if isinstance(m, ComputeOffer)]
    assert len(offers) > len(fleet.cars) // 2, "most parked cars offer within minutes"
    best = max(offers, key=lambda o: o.expected_departure)
    return best.sender


def test_cars_announce_themselves_and_most_offer() -> None:
    fleet = make_fleet()
    statuses = [m for _, m in drain(fleet) if isinstance(m, VehicleStatus)]
    assert len(statuses) == 60 and all(s.state == "online" for s in statuses)
    an_offering_car(fleet)


def test_fast_telemetry_decodes_to_the_slow_path_model() -> None:
    fleet = make_fleet(count=200)
    run_until(fleet, T0 + 3 * 3600, step=300)
    for car in [c for c in fleet.cars if c.offer_id is not None][:5]:
        send(fleet, assignment(fleet, car.vehicle_id, work_s=3600, assignment_id=f"as-{car.index}"))
    run_until(fleet, fleet.t + 60)
    assert len(fleet.busy) == 5
    for car in fleet.cars:
        reason = car.suspend_reason(fleet.t)
        state = car.compute_state(reason)
        fast = decode(fleet.encoder.telemetry(car, reason, state))
        assert isinstance(fast, VehicleTelemetry)
        assert fast == fleet.encoder.telemetry_model(car, reason, state)


def test_fast_offers_and_withdrawals_decode_to_what_the_codec_encodes_from_the_models() -> None:
    fleet = make_fleet(count=300)
    run_until(fleet, T0 + 5 * 3600, step=600)  # charge, heat and departures spread the figures
    for car in fleet.cars:
        fast = decode(fleet.encoder.offer(car, f"{car.vehicle_id}-o9"))
        assert isinstance(fast, ComputeOffer)
        assert fast == fleet.encoder.offer_model(car, f"{car.vehicle_id}-o9") == decode(encode(fast))
        for reason in ("driving away", 'a "quoted" reason \\ with ünïcode'):
            withdrawal = decode(fleet.encoder.withdrawal(car, "o-1", reason))
            assert withdrawal == OfferWithdrawal(sender=car.vehicle_id, sent_at=WALL, sim_time=fleet.encoder.sim_time,
                                                 offer_id="o-1", reason=reason)


def test_a_shard_runs_with_checkpoints_and_returns_the_deterministic_result() -> None:
    fleet = make_fleet()
    vid = an_offering_car(fleet)
    send(fleet, assignment(fleet, vid, work_s=300))
    out = drain(fleet)
    ack = [m for _, m in out if isinstance(m, ShardProgress)]
    assert len(ack) == 1 and ack[0].done_tera_ops == 0
    assert any(isinstance(m, OfferWithdrawal) and m.sender == vid for _, m in out)
    out = run_until(fleet, fleet.t + 400)
    progress = [m for _, m in out if isinstance(m, ShardProgress)]
    results = [m for _, m in out if isinstance(m, ShardResult)]
    assert len(progress) >= 3, "a checkpoint each minute of a five-minute shard"
    assert all(p.checkpoint_tera_ops == p.done_tera_ops for p in progress)
    assert len(results) == 1
    expected = hashlib.sha256(f"{'0f' * 32}:sh-1".encode()).hexdigest()
    assert results[0].result_digest == expected
    assert results[0].work_tera_ops == pytest.approx(fleet.by_id[vid].hardware.tops * 300)
    assert any(isinstance(m, ComputeOffer) and m.sender == vid for _, m in out), "offers again when done"


def test_a_faulty_car_returns_a_different_digest() -> None:
    fleet = make_fleet()
    vid = an_offering_car(fleet)
    fleet.by_id[vid].defect = Defect.WRONG_RESULTS
    send(fleet, assignment(fleet, vid, work_s=60))
    out = run_until(fleet, fleet.t + 120)
    (result,) = [m for _, m in out if isinstance(m, ShardResult)]
    assert result.result_digest != hashlib.sha256(f"{'0f' * 32}:sh-1".encode()).hexdigest()


def test_owner_return_preempts_with_a_checkpoint_and_nothing_is_dropped() -> None:
    fleet = make_fleet()
    vid = an_offering_car(fleet)
    send(fleet, assignment(fleet, vid, work_s=10_000))
    run_until(fleet, fleet.t + 150)
    inbound(fleet).handle(TOPICS.fleet_control, encode(DriveAway(
        sender="operator", sent_at=WALL, sim_time=WALL, vehicle_id=vid)), fleet.t)
    (pre,) = [m for _, m in drain(fleet) if isinstance(m, ShardPreempted)]
    car = fleet.by_id[vid]
    assert pre.checkpoint_tera_ops == pytest.approx(car.hardware.tops * 150, rel=0.1)
    assert pre.work_tera_ops == pre.checkpoint_tera_ops and pre.checkpoint.endswith(f"{pre.checkpoint_tera_ops:.6f}")
    assert car.shard is None and not fleet.busy
    out = run_until(fleet, fleet.t + 200)
    assert car.driving and not any(isinstance(m, ComputeOffer) and m.sender == vid for _, m in out)


def test_bad_assignments_are_refused_counted_and_the_car_keeps_running() -> None:
    fleet = make_fleet()
    vid = an_offering_car(fleet)
    other = next(v for v in fleet.by_id if v != vid)
    send(fleet, assignment(fleet, other, work_s=60, assignment_id="as-wrong"), vid=vid)  # not addressed to it
    inbound(fleet).handle(TOPICS.commands(vid), b'{"kind":"shard_assign","assignment_id":"as-bad"}', fleet.t)
    inbound(fleet).handle(TOPICS.commands(vid), b"\xff not json", fleet.t)
    send(fleet, assignment(fleet, vid, work_s=60, allocated_tops=5e5, assignment_id="as-big"))
    send(fleet, assignment(fleet, vid, work_s=60, checkpoint="ckpt:other:1.0", assignment_id="as-ckpt"))
    send(fleet, ShardCancel(sender="dispatcher", sent_at=WALL, sim_time=WALL, assignment_id="as-none", vehicle_id=vid))
    refusals = {m.assignment_id: m.reason for _, m in drain(fleet) if isinstance(m, ShardRefused)}
    assert set(refusals) == {"as-wrong", "as-bad", "as-big", "as-ckpt"}
    assert "not addressed" in refusals["as-wrong"] and "malformed" in refusals["as-bad"]
    assert fleet.counts["refused"] == 4 and fleet.counts["rejected"] == 3  # wrong car, 2 malformed
    assert fleet.counts["stale_cancels"] == 1
    send(fleet, assignment(fleet, vid, work_s=60))
    send(fleet, assignment(fleet, vid, work_s=60))  # a QoS 1 duplicate is not refused
    send(fleet, assignment(fleet, vid, work_s=60, assignment_id="as-2"))
    refusals = [m for _, m in drain(fleet) if isinstance(m, ShardRefused)]
    assert [r.assignment_id for r in refusals] == ["as-2"] and "busy" in refusals[0].reason
    out = run_until(fleet, fleet.t + 120)
    assert any(isinstance(m, ShardResult) for _, m in out)


def test_commands_are_decoded_by_the_shared_codec_and_checked_against_their_topic() -> None:
    fleet = make_fleet(count=10)
    vid, other = list(fleet.by_id)[:2]
    handler = inbound(fleet)
    drive = DriveAway(sender="operator", sent_at=WALL, sim_time=WALL, vehicle_id=vid)
    handler.handle(TOPICS.commands(vid), encode(drive), fleet.t)  # a fleet command on a car's topic
    handler.handle(TOPICS.commands("car-not-ours"), b"not even json", fleet.t)  # another process's car
    handler.handle(TOPICS.telemetry(vid), b"{}", fleet.t)  # not a topic the fleet subscribes to
    cancel = ShardCancel(sender="dispatcher", sent_at=WALL, sim_time=WALL, assignment_id="as-1", vehicle_id=other)
    handler.handle(TOPICS.commands(vid), encode(cancel), fleet.t)  # for `other`, on `vid`'s topic: not refused
    assert (fleet.counts["rejected_wrong_channel"], fleet.counts["rejected_topic_mismatch"]) == (2, 1)
    assert fleet.counts["foreign_commands"] == 1 and fleet.counts["rejected"] == 3
    assert fleet.counts["drive_away"] == 0 and fleet.counts["stale_cancels"] == 0
    assert not any(isinstance(m, ShardRefused) for _, m in drain(fleet))


def test_process_statuses_go_to_the_callbacks_passed_in_once_checked_against_their_topic() -> None:
    fleet = make_fleet(count=4)
    heard: list[object] = []
    handler = inbound(fleet, heard)

    def status(sender: str, role: str, state: Liveness = Liveness.ONLINE) -> bytes:
        return encode(ConnectionStatus(sender=sender, sent_at=WALL, sim_time=WALL, role=role,  # type: ignore[arg-type]
                                       state=state))

    handler.handle(TOPICS.connection_status("dispatcher"), status("dispatcher", "dispatcher"), fleet.t)
    handler.handle(TOPICS.connection_status("dispatcher"), status("dispatcher", "dispatcher", Liveness.OFFLINE),
                   fleet.t)
    handler.handle(TOPICS.connection_status("gw-1-0-1"), status("gw-1-0-1", "gateway"), fleet.t, retained=True)
    handler.handle(TOPICS.connection_status("gw-1-0-1"), status("dispatcher", "dispatcher"), fleet.t)  # a lie
    assert heard == [WALL, ("gw-1-0-1", True)]
    assert fleet.counts["rejected_sender_mismatch"] == 1


def test_replay_is_deterministic_and_shards_do_not_overlap() -> None:
    def trace(seed: int = 3) -> list[tuple[str, bytes]]:
        """Every message the fleet sends in six simulated hours, as bytes on their topics."""
        fleet = make_fleet(count=40, seed=seed)
        out = drain_raw(fleet)
        for now in range(int(T0) + 120, int(T0) + 6 * 3600 + 1, 120):
            fleet.encoder.stamp(WALL, now)
            fleet.advance(now)
            fleet.sweep(now, 10_000)
            out += drain_raw(fleet)
        return out

    first = trace()
    kinds = {decode(payload).kind for _, payload in first}
    assert {"vehicle_status", "offer", "telemetry"} <= kinds and len(first) > 40 * 6, "a trace worth comparing"
    assert first == trace()
    assert first != trace(seed=4)
    halves = [set(make_fleet(count=40, shard_index=i, shard_count=2).by_id) for i in (0, 1)]
    assert not halves[0] & halves[1] and halves[0] | halves[1] == set(make_fleet(count=40).by_id)


def test_add_cars_grows_this_process_share() -> None:
    fleet = make_fleet(count=10, shard_index=1, shard_count=2)
    assert len(fleet.cars) == 5
    inbound(fleet).handle(TOPICS.fleet_control, encode(AddCars(
        sender="operator", sent_at=WALL, sim_time=WALL, count=10, hardware_mix={"HW6": 1.0})), fleet.t)
    fleet.join(fleet.t, 100)
    assert len(fleet.cars) == 10 and all(c.hardware.generation == "HW6" for c in fleet.cars[5:])


def test_a_vanishing_car_goes_silent_mid_shard_and_comes_back_when_restarted() -> None:
    fleet = make_fleet()
    vid = an_offering_car(fleet)
    car = fleet.by_id[vid]
    car.defect = Defect.VANISHES
    send(fleet, assignment(fleet, vid, work_s=600))
    out = run_until(fleet, fleet.t + 700)
    assert not any(isinstance(m, ShardResult | ShardPreempted) for _, m in out), "it vanishes, it does not report"
    assert car.silent and car.shard is None and (LinkEvent.DROP, car.index) in fleet.link_events
    assert not any(getattr(m, "sender", None) == vid for _, m in out[-20:])
    fleet.drive_away(car, fleet.t)  # the owner drives off: the car restarts
    out = run_until(fleet, fleet.t + 200)
    assert not car.silent and any(isinstance(m, VehicleStatus) and m.reason == "restarted" for _, m in out)


@pytest.mark.parametrize("fault", ["duplicate_connectivity", "missing_connectivity", "dropped_signals"])
def test_fleet_telemetry_faults_can_be_injected(fault: str) -> None:
    from fake_vehicles.faults import FaultConfig

    fleet = make_fleet(count=20, faults=FaultConfig(**{fault: 1.0}))
    out = drain(fleet)
    statuses = [m for _, m in out if isinstance(m, VehicleStatus)]
    out = run_until(fleet, T0 + 120)
    telemetry = [m for _, m in out if isinstance(m, VehicleTelemetry)]
    if fault == "duplicate_connectivity":
        assert len(statuses) == 40 and len({s.sender for s in statuses}) == 20
    elif fault == "missing_connectivity":
        assert statuses == [] and fleet.counts["fault_missing_connectivity"] == 20
    else:
        assert telemetry == [] and len(statuses) == 20


def test_cars_go_silent_until_restarted_when_injected() -> None:
    from fake_vehicles.faults import FaultConfig

    fleet = make_fleet(count=50, faults=FaultConfig(silent_per_day=1.0))
    run_until(fleet, T0 + 10 * 3600, step=120)
    assert fleet.counts["fault_silent"] > 0 and fleet.silent > 0
    assert any(e == (LinkEvent.DROP, c.index) for c in fleet.cars if c.silent for e in fleet.link_events)


def test_the_progress_line_is_one_short_line_with_the_counts() -> None:
    import io
    import threading

    from fake_vehicles.runner import Runner, RunSettings
    from mqttlink import BrokerUrl
    from protocol.clock import ManualClock, SimClock

    fleet = make_fleet(count=30)
    run_until(fleet, T0 + 300)
    out = io.StringIO()
    wall = ManualClock(100.0)
    settings = RunSettings(url=BrokerUrl("127.0.0.1", 1), gateway_id="gw-1-0-1", per_car=False, local_start=T0,
                           progress_out=out)
    runner = Runner(fleet, SimClock(60.0, datetime.fromtimestamp(T0, UTC), wall), settings, threading.Event())
    runner.published = 500
    runner._last_report = (0.0, 0)
    runner.report(10.0)
    (line,) = out.getvalue().splitlines()
    assert line.startswith("vehicles: 30 cars: 30 online, ") and "50 msgs/s" in line and " busy, " in line
    assert len(line) < 120


def test_a_car_offers_as_soon_as_its_driver_has_left_without_waiting_for_the_sweep() -> None:
    from fake_vehicles.car import DETOUR_DRIVE_S, OWNER_RETURN_LEAD_S, SETTLE_S

    fleet = make_fleet(count=40, telemetry_interval_s=3600.0)
    vid = an_offering_car(fleet)
    car = fleet.by_id[vid]
    fleet.drive_away(car, fleet.t)
    drain(fleet)
    back = fleet.t + OWNER_RETURN_LEAD_S + DETOUR_DRIVE_S
    fleet.advance(back + SETTLE_S / 2)
    assert not car.driving
    assert not any(isinstance(m, ComputeOffer) and m.sender == vid for _, m in drain(fleet)), "driver still in"
    fleet.advance(back + SETTLE_S + 1)  # events only: no sweep
    offers = [m for _, m in drain(fleet) if isinstance(m, ComputeOffer) and m.sender == vid]
    assert len(offers) == 1 and offers[0].offer_id.endswith("-o2")


def test_some_cars_belong_to_fleet_owners_for_per_owner_earnings() -> None:
    fleet = make_fleet(count=400)
    owners = [m.owner_id for _, m in drain(fleet) if isinstance(m, VehicleStatus)]
    owned = [o for o in owners if o is not None]
    assert 0.05 < len(owned) / len(owners) < 0.2 and len(set(owned)) > 10
