"""The owner's money in the ledger (a real SQLite file): compute and robotaxi income, energy, net,
per owner and per mode, and the fleet total that the summary and the earnings report both show."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from dispatcher.ledger import earnings as book
from protocol import Liveness, OwnerMode, VehicleStatus, decode
from protocol.owners import (
    CAR_PAYMENT,
    CarEarnings,
    EarningsReport,
    RobotaxiTrip,
    fare_for,
    owner_income_for,
)
from tests.test_dispatcher_money import Money

PRICE = 0.15  # the engine's default energy price


@pytest.fixture
def m(tmp_path: Path) -> Money:
    return Money(tmp_path / "ledger.sqlite")


def _mode(m: Money, vid: str, mode: OwnerMode, owner: str | None = None) -> None:
    """The car's status names its owner mode (the dispatcher reads no per-car telemetry)."""
    m.send(m.topics.vehicle_status(vid), VehicleStatus(**m.env(vid), state=Liveness.ONLINE, owner_id=owner,
                                                       owner_mode=mode))
    m.engine.tick()


def _trip(m: Money, vid: str, n: int, km: float = 9.0, minutes: float = 18.0, energy_kwh: float = 2.0,
          ends_in_s: float = 0.0) -> None:
    """Trip `n` of `vid`, ending now (plus `ends_in_s` simulated seconds)."""
    env = {**m.env(vid), "sim_time": m.sim_now() + timedelta(seconds=ends_in_s)}
    m.send(m.topics.trips(vid), RobotaxiTrip(**env, trip_id=f"{vid}-t{n}", paid_km=km, empty_km=km * 0.4,
                                             duration_s=minutes * 60.0, energy_kwh=energy_kwh))


def _computed(m: Money, *vids: str) -> None:
    """One shard done by two cars that agree (the harness spot-checks every result against a replica)."""
    for vid in vids:
        m.car(vid)
    m.job(redundancy=2)
    first, second = m.assign()
    m.later(11.0)
    m.result(first)
    m.result(second)


def test_compute_income_net_is_gross_minus_energy_cost(m: Money) -> None:
    _computed(m, "car-a", "car-b")
    car = book.car_money(m.ledger.db, "car-a")
    assert car is not None and car.money.compute_gross > 0
    statement = m.ledger.statement("car-a")
    assert car.money.compute_gross == pytest.approx(statement.gross)
    assert car.money.energy_cost == pytest.approx(0.01 * PRICE)
    assert car.money.net == pytest.approx(car.money.compute_gross - car.money.energy_cost)


def test_a_robotaxi_trip_is_booked_once_at_the_owners_share_of_the_fare(m: Money) -> None:
    _mode(m, "car-r", OwnerMode.ROBOTAXI, owner="owner-01")
    _trip(m, "car-r", 1)
    _trip(m, "car-r", 1)  # a QoS 1 duplicate
    car = book.car_money(m.ledger.db, "car-r")
    assert car is not None and car.owner_id == "owner-01" and car.owner_mode is OwnerMode.ROBOTAXI
    income = owner_income_for(9.0, 1080.0)
    assert income == pytest.approx(0.5 * fare_for(9.0, 1080.0)) and income == pytest.approx(0.5 * 16.9)
    assert car.money.robotaxi_gross == pytest.approx(income) and car.money.robotaxi_trips == 1
    assert car.money.robotaxi_km == pytest.approx(9.0 * 1.4)
    assert car.money.energy_cost == pytest.approx(2.0 * PRICE)
    assert car.money.net == pytest.approx(income - 2.0 * PRICE)


def test_trips_outside_robotaxi_mode_or_too_fast_are_refused_and_counted(m: Money) -> None:
    _mode(m, "car-c", OwnerMode.COMPUTE)
    _trip(m, "car-c", 1)
    _mode(m, "car-r", OwnerMode.BOTH)
    _trip(m, "car-r", 1, km=100.0, minutes=10.0)  # 840 km/h
    assert m.ledger.totals()["robotaxi_trips"] == 0
    assert m.rejections() == {"trip_not_in_robotaxi_mode": 1, "trip_too_fast": 1}


def test_owner_sums_equal_car_sums_and_the_fleet_equals_the_summary(m: Money) -> None:
    _computed(m, "car-a", "car-b")
    _mode(m, "car-a", OwnerMode.BOTH, owner="owner-07")
    _mode(m, "car-r", OwnerMode.ROBOTAXI, owner="owner-07")
    _mode(m, "car-s", OwnerMode.ROBOTAXI)
    for n in range(3):
        m.later(18.0)  # a trip's 18 simulated minutes at 60x: one trip at a time
        _trip(m, "car-r", n)
        _trip(m, "car-s", n)
    _trip(m, "car-a", 9)
    db = m.ledger.db
    cars, owners = book.cars_money(db), book.owners_money(db)
    assert {c.vehicle_id for c in cars} == {"car-a", "car-b", "car-r", "car-s"}
    # car-a's owner was heard after its first payment; a car with no owner named is its own owner
    assert {o.owner_id: o.cars for o in owners} == {"car-b": 1, "owner-07": 2, "car-s": 1}
    for field in ("compute_gross", "robotaxi_gross", "energy_cost", "net", "robotaxi_trips"):
        car_sum = sum(getattr(c.money, field) for c in cars)
        assert sum(getattr(o.money, field) for o in owners) == pytest.approx(car_sum)
        assert getattr(book.fleet_money(db), field) == pytest.approx(car_sum)
    summary = m.engine.summary()
    fleet = book.fleet_money(db)
    assert summary.earnings_gross == pytest.approx(fleet.compute_gross)
    assert summary.robotaxi_gross == pytest.approx(fleet.robotaxi_gross) and summary.robotaxi_trips == 7
    assert summary.energy_cost == pytest.approx(fleet.energy_cost)
    assert summary.earnings_net == pytest.approx(fleet.net)
    assert summary.cars_by_owner_mode == {"both": 1, "robotaxi": 2}
    report = next(decode(o.payload) for o in m.engine.earnings() if o.topic == m.topics.earnings)
    assert isinstance(report, EarningsReport) and report.fleet == fleet and report.cars == 4 and report.owners == 3
    assert [c.vehicle_id for c in report.top_cars] == [c.vehicle_id for c in cars]  # by net, highest first
    assert report.top_cars[0].money.net >= report.top_cars[-1].money.net


def test_money_is_counted_per_mode_per_car_day_against_the_car_payment(m: Money) -> None:
    _mode(m, "car-r", OwnerMode.ROBOTAXI)
    _trip(m, "car-r", 1)
    m.later(24 * 60.0)  # one simulated day at 60x
    _mode(m, "car-r", OwnerMode.COMPUTE)
    m.later(12 * 60.0)  # half a day in compute mode, earning nothing
    modes = {row.owner_mode: row for row in book.modes_money(m.ledger.db, m.engine.clock.now_s)}
    robotaxi, compute = modes[OwnerMode.ROBOTAXI], modes[OwnerMode.COMPUTE]
    assert robotaxi.car_days == pytest.approx(1.0, rel=1e-3) and compute.car_days == pytest.approx(0.5, rel=1e-3)
    assert robotaxi.cars == 0 and compute.cars == 1  # cars in the mode now
    assert robotaxi.net_per_car_day == pytest.approx(robotaxi.money.net, rel=1e-3)
    assert robotaxi.net_per_car_month == pytest.approx(30 * robotaxi.net_per_car_day)
    assert robotaxi.payment_share == pytest.approx(robotaxi.net_per_car_month / CAR_PAYMENT.value)
    assert compute.money.net == 0.0 and compute.net_per_car_day == 0.0


def test_changed_cars_get_their_own_message_once(m: Money) -> None:
    _mode(m, "car-r", OwnerMode.ROBOTAXI)
    _trip(m, "car-r", 1)
    first = [decode(o.payload) for o in m.engine.earnings()]
    own = [message for message in first if isinstance(message, CarEarnings)]
    assert [c.car.vehicle_id for c in own] == ["car-r"] and own[0].car.money.robotaxi_trips == 1
    again = [decode(o.payload) for o in m.engine.earnings()]
    assert [type(message) for message in again] == [EarningsReport]  # nothing changed: the report only


def test_trips_must_fit_one_after_another_in_time_and_an_overlap_is_refused(m: Money) -> None:
    _mode(m, "car-r", OwnerMode.ROBOTAXI)
    for n in range(1000):  # the attack: 1,000 long trips at one instant
        _trip(m, "car-r", n, km=120.0, minutes=360.0)
    assert m.ledger.totals()["robotaxi_trips"] == 1
    assert m.rejections() == {"trip_overlaps": 999}
    m.later(360.0)  # six simulated hours later the car is free again
    _trip(m, "car-r", 1000, km=120.0, minutes=360.0)
    _trip(m, "car-r", 1001, ends_in_s=120.0)  # ends two minutes from now: beyond the one-second slack (60 s)
    _trip(m, "car-r", 1002, km=700.0, minutes=360.0)  # beyond the plausible trip length
    assert m.ledger.totals()["robotaxi_trips"] == 2
    assert m.rejections() == {"trip_overlaps": 999, "trip_in_future": 1, "trip_too_long": 1}


def test_a_trip_starting_within_the_clock_slack_of_the_last_one_is_booked(m: Money) -> None:
    _mode(m, "car-r", OwnerMode.ROBOTAXI)
    _trip(m, "car-r", 1)
    m.later(18.0 - 0.5)  # starts 30 simulated seconds before the last ended: within the slack
    _trip(m, "car-r", 2)
    assert m.ledger.totals()["robotaxi_trips"] == 2 and m.rejections() == {}


def test_a_redelivered_trip_is_counted_apart_and_a_reused_id_is_refused(m: Money) -> None:
    _mode(m, "car-r", OwnerMode.ROBOTAXI)
    _trip(m, "car-r", 1)
    _trip(m, "car-r", 1)  # the same trip again (QoS 1)
    m.later(18.0)
    _trip(m, "car-r", 1, energy_kwh=3.0)  # another trip under the same id
    assert m.ledger.totals()["robotaxi_trips"] == 1 and m.ledger.totals()["trip_duplicates"] == 1
    assert m.rejections() == {"trip_id_reused": 1}
