"""Gateway frames in the dispatcher: rosters diffed per block, offer frames, and which cars a gateway speaks for.

The engine tests feed payloads to `Engine.handle` with a real SQLite ledger; the broker tests
publish the frames with mosquitto_pub, logged in as the gateway, to a real dispatcher on both brokers.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.engine import Engine
from dispatcher.ledger import Ledger
from dispatcher.matchmaker import kwh_per_tera_op
from protocol import (
    ComputeOffer,
    ConnectionStatus,
    HardwareGeneration,
    JobSubmission,
    Liveness,
    OfferWithdrawal,
    OwnerMode,
    ShardAssignment,
    ShardProgress,
    Topics,
    VehicleStatus,
    decode,
    encode,
)
from protocol.clock import ManualClock
from protocol.frames import CarRoster, OfferFrame, RosterEntry
from tests.support.brokers import TestBroker
from tests.support.mosquitto_clients import mosquitto_pub
from tests.support.scripted_cars import dispatcher_running
from tests.support.waiting import wait_until

T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)
HW5 = HardwareGeneration.HW5


def env(sender: str, at: datetime = T0) -> dict[str, object]:
    return {"sender": sender, "sent_at": at, "sim_time": at}


def entry(vid: str, state: Liveness = Liveness.ONLINE, **fields: object) -> RosterEntry:
    return RosterEntry.model_validate({"vehicle_id": vid, "state": state, "hardware": HW5, **fields})


def roster(gw: str, cars: list[RosterEntry], block: int = 0, at: datetime = T0) -> CarRoster:
    return CarRoster(**env(gw, at), block=block, cars=cars)


def offer(vid: str, at: datetime = T0, price: float = 0.02) -> ComputeOffer:
    return ComputeOffer(**env(vid, at), offer_id=f"{vid}-o1", hardware=HW5, free_tops=5000.0, energy_budget_kwh=10.0,
                        expected_departure=at + timedelta(hours=8), departure_confidence=0.9,
                        price_per_tops_hour=price, soc=0.8)


def frame(gw: str, items: list[ComputeOffer | OfferWithdrawal], seq: int = 0, at: datetime = T0) -> OfferFrame:
    return OfferFrame(**env(gw, at), seq=seq, offers=items)


class Engine1:
    """An engine on a manual clock and a real ledger file."""

    def __init__(self, tmp_path: Path) -> None:
        self.topics = Topics("frm")
        self.wall = ManualClock()
        self.ledger = Ledger(tmp_path / "ledger.sqlite")
        self.engine = Engine(self.topics, self.ledger, sim_now=lambda: T0 + timedelta(seconds=self.wall.t),
                             wall=self.wall, rng=random.Random(1), heartbeat_timeout_s=60.0)

    def roster(self, gw: str, cars: list[RosterEntry], block: int = 0) -> list[object]:
        outs = self.engine.handle(self.topics.roster(gw, block), encode(roster(gw, cars, block)))
        return [decode(o.payload) for o in outs]

    def offers(self, gw: str, items: list[ComputeOffer | OfferWithdrawal]) -> None:
        assert self.engine.handle(self.topics.offer_frames(gw), encode(frame(gw, items))) == []

    def state(self, vid: str) -> str:
        return self.engine.registry.cars[vid].state.value

    def refused(self) -> dict[str, int]:
        return dict(self.engine.rejections())


@pytest.fixture
def e(tmp_path: Path) -> Engine1:
    return Engine1(tmp_path)


def test_a_roster_makes_the_cars_known_as_their_statuses_would(e: Engine1) -> None:
    e.roster("gw-0", [entry("car-a", owner_id="owner-1", owner_mode=OwnerMode.ROBOTAXI), entry("car-b"),
                      entry("car-c", Liveness.ASLEEP)])
    cars = e.engine.registry.cars
    assert set(cars) == {"car-a", "car-b", "car-c"}
    assert (cars["car-a"].gateway, cars["car-a"].owner, cars["car-a"].hardware) == ("gw-0", "owner-1", "HW5")
    assert e.state("car-c") == "asleep"
    summary = e.engine.summary()
    assert summary.tops_total == 2 * 5000.0 and summary.cars_by_owner_mode == {"robotaxi": 1}
    e.engine.tick()
    assert e.ledger.db.execute("SELECT owner_mode FROM cars WHERE vehicle_id = 'car-a'").fetchone() == ("robotaxi",)


def test_an_offer_frame_applies_offers_and_withdrawals_in_order(e: Engine1) -> None:
    e.roster("gw-0", [entry("car-a"), entry("car-b"), entry("car-c")])
    gone = OfferWithdrawal(**env("car-b"), offer_id="car-b-o1", reason="driving away")
    e.offers("gw-0", [offer("car-a"), offer("car-b"), gone, offer("car-c")])
    book = e.engine.offers.book
    assert set(book.offers) == {"car-a", "car-c"}
    assert (e.state("car-a"), e.state("car-b")) == ("idle", "driving")
    e.engine.tick()  # the standing offers are kept for a restart, one transaction for the tick
    assert sorted(row[0] for row in e.ledger.standing_offers()) == ["car-a", "car-c"]


def test_a_roster_diff_takes_away_the_cars_it_no_longer_lists_or_lists_offline(e: Engine1) -> None:
    e.roster("gw-0", [entry("car-a"), entry("car-b"), entry("car-c")])
    e.offers("gw-0", [offer("car-a"), offer("car-b"), offer("car-c")])
    e.roster("gw-0", [entry("car-a"), entry("car-c", Liveness.OFFLINE, reason="owner unplugged it")])
    assert (e.state("car-a"), e.state("car-b"), e.state("car-c")) == ("idle", "offline", "offline")
    assert set(e.engine.offers.book.offers) == {"car-a"}
    e.offers("gw-0", [offer("car-b")])  # no longer listed by gw-0: gw-0 does not speak for it
    assert "car-b" not in e.engine.offers.book and e.refused() == {"offer_for_unlisted_car": 1}


def test_a_car_moved_to_another_block_of_its_gateway_has_not_left(e: Engine1) -> None:
    e.roster("gw-0", [entry("car-a"), entry("car-b")], block=0)
    e.roster("gw-0", [entry("car-b")], block=1)  # the gateway renumbered it: block 1 lists it first ...
    e.roster("gw-0", [entry("car-a")], block=0)  # ... then block 0 no longer does
    assert (e.state("car-a"), e.state("car-b")) == ("online", "online")
    e.roster("gw-0", [], block=1)
    assert e.state("car-b") == "offline"


def test_a_car_leaving_a_roster_loses_its_running_shard(e: Engine1) -> None:
    e.roster("gw-0", [entry("car-a")])
    e.offers("gw-0", [offer("car-a")])
    job = JobSubmission(**env("operator"), job_id="job-1", name="j", total_work_tera_ops=1e6, shards=1,
                        min_tops_per_car=100.0, max_parallel_shards=1)
    e.engine.handle(e.topics.job_submit, encode(job))
    (assignment,) = [m for m in (decode(o.payload) for o in e.engine.tick()) if isinstance(m, ShardAssignment)]
    assert assignment.vehicle_id == "car-a" and e.engine.summary().compute_power_kw > 0
    e.wall.advance(30.0)
    progress = ShardProgress(**env("car-a", T0 + timedelta(seconds=30)), assignment_id=assignment.assignment_id,
                             job_id="job-1", shard_id=assignment.shard_id, done_tera_ops=1000.0,
                             checkpoint_tera_ops=1000.0, checkpoint="c1")
    e.engine.handle(e.topics.shards("car-a"), encode(progress))  # shards stay on the car's own topic
    attempt = e.ledger.attempt(assignment.assignment_id)
    assert attempt is not None and attempt.checkpoint_tera_ops == 1000.0
    e.roster("gw-0", [])
    attempt = e.ledger.attempt(assignment.assignment_id)
    assert attempt is not None and attempt.status == "lost"
    summary = e.engine.summary()
    assert summary.preemptions == 1 and summary.faults_detected == {"shards_lost_car_gone": 1}
    assert summary.compute_power_kw == 0.0  # 30 s of its power, by the one model the cars and the matchmaker use:
    assert summary.energy_from_battery_kwh == pytest.approx(kwh_per_tera_op(HW5) * 5000.0 * 30.0)


def test_another_gateway_cannot_speak_for_a_car_bound_to_an_online_gateway(e: Engine1) -> None:
    e.roster("gw-0", [entry("car-a"), entry("car-b")])
    e.offers("gw-0", [offer("car-a", price=0.02)])
    e.roster("gw-1", [entry("car-a", Liveness.OFFLINE), entry("car-x")])  # forged: car-a is gw-0's
    e.offers("gw-1", [offer("car-a", price=0.5), OfferWithdrawal(**env("car-b"), offer_id="o", reason="driving away")])
    assert e.refused() == {"car_of_another_gateway": 3}
    assert e.state("car-a") == "idle" and e.engine.offers.book.offers["car-a"].price_per_tops_hour == 0.02
    assert e.engine.registry.cars["car-x"].gateway == "gw-1"  # its own cars are taken
    offline = ConnectionStatus(**env("gw-0"), role="gateway", state=Liveness.OFFLINE)
    e.engine.handle(e.topics.connection_status("gw-0"), encode(offline))
    e.roster("gw-1", [entry("car-a"), entry("car-x")])  # gw-0 is gone: its car may move to gw-1
    assert e.state("car-a") == "online" and e.engine.registry.cars["car-a"].gateway == "gw-1"
    online = ConnectionStatus(**env("gw-0"), role="gateway", state=Liveness.ONLINE)
    e.engine.handle(e.topics.connection_status("gw-0"), encode(online))
    e.roster("gw-0", [entry("car-a"), entry("car-b")])  # back, but car-a is gw-1's now, and gw-1 is online
    assert e.refused() == {"car_of_another_gateway": 4}
    assert e.engine.registry.cars["car-a"].gateway == "gw-1" and e.state("car-b") == "online"


def test_an_unchanged_roster_refreshes_its_cars_and_a_change_is_applied(e: Engine1) -> None:
    e.roster("gw-0", [entry("car-a"), entry("car-b")])
    e.wall.advance(50.0)
    e.roster("gw-0", [entry("car-a"), entry("car-b", owner_mode=OwnerMode.NONE)])
    e.wall.advance(50.0)  # 100 s after the first roster, 50 s after the second: within the 60 s timeout
    e.engine.tick()
    assert (e.state("car-a"), e.state("car-b")) == ("online", "online")
    assert e.engine.money.mode_counts() == {"none": 1}


def test_a_malformed_or_misplaced_frame_is_counted_and_dropped(e: Engine1) -> None:
    good = encode(roster("gw-0", [entry("car-a")]))
    assert e.engine.handle(e.topics.roster("gw-1", 0), good) == []  # gw-0's roster on gw-1's topic
    assert e.engine.handle(e.topics.roster("gw-0", 3), good) == []  # block 0 on the topic of block 3
    assert e.engine.handle(e.topics.offer_frames("gw-0"), b"{not json") == []
    assert e.engine.registry.cars == {}
    assert e.refused() == {"sender_mismatch": 1, "topic_mismatch": 1, "invalid": 1}


# through a real broker, published by mosquitto_pub logged in as the gateway ----------------------
async def test_frames_published_by_a_gateway_reach_the_dispatcher_and_forgeries_are_refused(
    secure_broker: TestBroker, tmp_path: Path,
) -> None:
    topics = secure_broker.topics
    async with dispatcher_running(secure_broker, tmp_path / "l.sqlite", speed=1.0) as engine:
        now = datetime.now(UTC)
        cars = [entry("car-a"), entry("car-b", owner_mode=OwnerMode.BOTH)]
        assert await mosquitto_pub(secure_broker, "gw-0", "-t", topics.roster("gw-0", 0), "-r",
                                   "-m", encode(roster("gw-0", cars, at=now)).decode()) == 0
        await wait_until(lambda: set(engine.registry.cars) == {"car-a", "car-b"}, 10, "the roster's cars")
        offers = frame("gw-0", [offer("car-a", now), offer("car-b", now)], at=now)
        assert await mosquitto_pub(secure_broker, "gw-0", "-t", topics.offer_frames("gw-0"),
                                   "-m", encode(offers).decode()) == 0
        await wait_until(lambda: len(engine.offers.book) == 2, 10, "the frame's offers")
        # gw-1 (a real gateway login) lists and offers for gw-0's cars in its own frames
        forged = encode(frame("gw-1", [offer("car-a", now, price=0.9)], at=now)).decode()
        assert await mosquitto_pub(secure_broker, "gw-1", "-t", topics.offer_frames("gw-1"), "-m", forged) == 0
        taken = encode(roster("gw-1", [entry("car-b", Liveness.OFFLINE)], at=now)).decode()
        assert await mosquitto_pub(secure_broker, "gw-1", "-t", topics.roster("gw-1", 0), "-m", taken) == 0
        await wait_until(lambda: engine.rejections()["car_of_another_gateway"] == 2, 10, "the forgeries refused")
        assert engine.offers.book.offers["car-a"].price_per_tops_hour == 0.02 and len(engine.offers.book) == 2
        # a job runs on one of them, and the next roster no longer lists that car: its shard is lost
        job = JobSubmission(**env("operator", now), job_id="job-f", name="f", total_work_tera_ops=1e9, shards=1,
                            min_tops_per_car=100.0, max_parallel_shards=1)
        assert await mosquitto_pub(secure_broker, "operator", "-t", topics.job_submit,
                                   "-m", encode(job).decode()) == 0
        await wait_until(lambda: len(engine.watchlist.watched) == 1, 10, "an assignment")
        ((aid, running),) = engine.watchlist.watched.items()
        kept = [c for c in cars if c.vehicle_id != running.vehicle_id]
        assert await mosquitto_pub(secure_broker, "gw-0", "-t", topics.roster("gw-0", 0), "-r",
                                   "-m", encode(roster("gw-0", kept, at=now)).decode()) == 0
        await wait_until(lambda: engine.summary().preemptions == 1, 10, "the shard lost with its car")
        assert engine.registry.cars[running.vehicle_id].state == "offline" and aid not in engine.watchlist.watched
        attempt = engine.ledger.attempt(aid)
        assert attempt is not None and attempt.status == "lost"


def test_a_gateway_going_offline_takes_its_cars_offline_a_slice_per_tick(e: Engine1) -> None:
    cars = [f"car-{i:02d}" for i in range(25)]
    e.roster("gw-0", [entry(vid) for vid in cars])
    e.offers("gw-0", [offer(vid) for vid in cars])
    e.engine.cars.gone_slice = 10  # 10,000 in the service: a quarter of a million cars are not one pass
    offline = ConnectionStatus(**env("gw-0"), role="gateway", state=Liveness.OFFLINE)
    e.engine.handle(e.topics.connection_status("gw-0"), encode(offline))
    states = [e.state(vid) for vid in cars]
    assert (states.count("offline"), states.count("idle"), len(e.engine.offers.book)) == (10, 15, 15)
    e.engine.tick()
    assert [e.state(vid) for vid in cars].count("offline") == 20
    e.engine.tick()
    assert {e.state(vid) for vid in cars} == {"offline"} and len(e.engine.offers.book) == 0
    assert e.engine.registry.state_counts()["online"] == 0


def test_a_gateway_back_before_its_last_slice_keeps_the_rest_and_its_frames_come_after_its_departure(
        e: Engine1) -> None:
    cars = [f"car-{i:02d}" for i in range(25)]
    e.roster("gw-0", [entry(vid) for vid in cars])
    e.engine.cars.gone_slice = 10
    offline = ConnectionStatus(**env("gw-0"), role="gateway", state=Liveness.OFFLINE)
    online = ConnectionStatus(**env("gw-0"), role="gateway", state=Liveness.ONLINE)
    e.engine.handle(e.topics.connection_status("gw-0"), encode(offline))
    e.engine.handle(e.topics.connection_status("gw-0"), encode(online))
    e.engine.tick()
    assert [e.state(vid) for vid in cars].count("offline") == 10  # the other 15 were never lost
    e.engine.handle(e.topics.connection_status("gw-0"), encode(offline))
    e.offers("gw-0", [offer("car-00")])  # still listed by gw-0: it speaks again, after all its cars left
    assert e.state("car-00") == "idle" and [e.state(vid) for vid in cars].count("offline") == 24


def test_cars_first_heard_of_in_a_roster_are_recorded_as_their_own_statuses_would_record_them(tmp_path: Path) -> None:
    """A roster's new cars join all at once (`Registry.join_online`): the same records, counts, heartbeats
    and owner modes as the same cars' own statuses, one by one."""
    generations = [HardwareGeneration.HW4, HW5, HardwareGeneration.HW6, None]
    modes = [OwnerMode.COMPUTE, OwnerMode.ROBOTAXI, None, OwnerMode.BOTH, OwnerMode.NONE]
    listed = [RosterEntry.model_validate({
        "vehicle_id": f"car-{i:02d}", "state": Liveness.ASLEEP if i % 7 == 3 else Liveness.ONLINE,
        "hardware": generations[i % 4], "owner_id": f"owner-{i % 3}" if i % 2 else None,
        "owner_mode": modes[i % 5]}) for i in range(30)]
    framed, per_car = Engine1(tmp_path / "framed"), Engine1(tmp_path / "per-car")
    for engines in (framed, per_car):
        engines.wall.advance(5.0)
    framed.roster("gw-0", listed)
    for item in listed:
        status = VehicleStatus(**env(item.vehicle_id), state=item.state, hardware=item.hardware, gateway="gw-0",
                               owner_id=item.owner_id, owner_mode=item.owner_mode)
        per_car.engine.handle(per_car.topics.vehicle_status(item.vehicle_id), encode(status))

    def seen(engine: Engine) -> tuple[object, ...]:
        registry, money = engine.registry, engine.money
        return ({vid: asdict(car) for vid, car in registry.cars.items()}, dict(registry.by_state),
                dict(registry.by_hardware), dict(registry.tops_by_hardware), registry.by_gateway,
                dict(registry._last_heard), money.modes, dict(money.by_mode))

    assert seen(framed.engine) == seen(per_car.engine)
    assert framed.engine.summary().cars_by_owner_mode == per_car.engine.summary().cars_by_owner_mode
