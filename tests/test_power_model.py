"""One model of power and heat: its figures per generation, read by the car and by the energy-aware policy."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from dispatcher.matchmaker import WATTS_PER_TOPS, Need, Offer, OfferBook, kwh_per_tera_op
from fake_vehicles.car import Car
from fake_vehicles.catalogue import HARDWARE, CarModel
from fake_vehicles.ids import vehicle_id
from fake_vehicles.work import RunningShard
from protocol import HardwareGeneration, MatchPolicy, power
from protocol.job_messages import ShardAssignment
from protocol.power import HARDWARE_POWER, HOT_RESUME_C, HOT_STOP_C

HW3, HW4, HW5, HW6 = HardwareGeneration.HW3, HardwareGeneration.HW4, HardwareGeneration.HW5, HardwareGeneration.HW6
MIDNIGHT = datetime(2026, 12, 1, 0, 0, tzinfo=UTC).timestamp()  # a Tuesday, local time = UTC here
HOUR = 3600.0
OLD_POLICY_WATTS_PER_TOPS = {HW3: 0.5, HW4: 0.35, HW5: 0.14, HW6: 0.08}  # the table the policy used to keep
CYBERTRUCK = CarModel("cybertruck", 123.0, 0.26, 1.0)


def test_power_per_generation_with_sources() -> None:
    kw = {g: hw.compute_power_kw for g, hw in HARDWARE_POWER.items()}
    assert kw == {HW3: 0.072, HW4: 0.16, HW5: 2.56, HW6: 5.12}
    watts = {g: round(hw.watts_per_tops, 3) for g, hw in HARDWARE_POWER.items()}
    assert watts == {HW3: 0.5, HW4: 1.28, HW5: 0.512, HW6: 0.256}  # HW4 (125 TOPS, essay-derived): least efficient
    for hw in HARDWARE_POWER.values():
        assert hw.tops_source.split(":")[0] in {"essay", "public figure quoted in SEED.md", "derived assumption"}
        assert hw.power_source.split(":")[0] in {"assumption", "derived"}


def test_the_fleet_and_the_policy_read_the_same_model() -> None:
    assert HARDWARE is HARDWARE_POWER
    assert {g: hw.watts_per_tops for g, hw in HARDWARE_POWER.items()} == WATTS_PER_TOPS
    assert WATTS_PER_TOPS[HW3] < WATTS_PER_TOPS[HW4], "HW3 is the more efficient of the two in the fleet's model"
    for generation in HardwareGeneration:  # what a car spends per tera-op is what the policy plans with
        car = _parked_car(generation, soc=0.8, pack_c=10.0, at=MIDNIGHT + 2 * HOUR)
        _start_shard(car, work=car.hardware.tops * 600.0)
        car.advance(car.t + 600.0)
        assert car.shard is not None
        assert car.shard.energy_kwh / car.shard.work_this_assignment == pytest.approx(kwh_per_tera_op(generation))


def test_energy_aware_ranks_by_the_models_efficiency() -> None:
    book = OfferBook(MatchPolicy.ENERGY_AWARE)
    for generation in HardwareGeneration:
        book.put(_offer(generation.value, generation, local_h=2.0))
    order = [book.match(Need(min_tops=1.0, work_tera_ops=1.0), 0.0) for _ in HardwareGeneration]
    assert [o.hardware for o in order if o] == [HW6, HW3, HW5, HW4]


@pytest.mark.parametrize(("start_h", "charging"), [(9.0, False), (12.0, True), (14.0, False)])
def test_the_car_runs_hot_when_the_model_says(start_h: float, charging: bool) -> None:
    car = _parked_car(HW6, soc=0.84, pack_c=25.0, at=MIDNIGHT + start_h * HOUR, battery=1_000.0)
    car.charger_kw = 7.4 if charging else 0.0
    predicted = power.seconds_until_too_hot(25.0, start_h * HOUR, HARDWARE_POWER[HW6].compute_power_kw,
                                            charging=charging)
    _start_shard(car, work=1e15)
    t0 = t = car.t
    while not car.pack_too_hot:
        t += 30.0
        car.advance(t)
    assert t - t0 == pytest.approx(predicted, abs=120.0)


def test_heat_limits_by_generation_and_hour() -> None:
    noon, three_am = 12 * HOUR, 3 * HOUR
    for generation in (HW3, HW4, HW5):  # these never reach the limit, even charging at the day's hottest hour
        assert power.seconds_until_too_hot(HOT_RESUME_C - 1, 15 * HOUR, HARDWARE_POWER[generation].compute_power_kw,
                                           charging=True) == float("inf")
    hw6_kw = HARDWARE_POWER[HW6].compute_power_kw
    assert power.seconds_until_too_hot(20.0, noon, hw6_kw) < 2 * HOUR
    assert 4 * HOUR < power.seconds_until_too_hot(20.0, three_am, hw6_kw, charging=True) < 8 * HOUR  # until mid-morning
    assert power.ambient_c(three_am) == pytest.approx(6.0) and power.ambient_c(15 * HOUR) == pytest.approx(22.0)
    assert HOT_RESUME_C < HOT_STOP_C


def test_the_hw6_142_kwh_shard_that_bounced_is_no_longer_assigned() -> None:
    """The incident: an HW6 car took a shard needing about 142 kWh and bounced 52 times on pack_too_hot."""
    work = 142.0 / HARDWARE_POWER[HW6].kwh_per_tera_op  # about 2.0e9 tera-ops, 27.7 h of a full HW6
    car = _parked_car(HW6, soc=0.9, pack_c=22.0, at=MIDNIGHT + 14 * HOUR)
    budget = car.energy_budget_kwh()
    old_estimate_kwh = work * OLD_POLICY_WATTS_PER_TOPS[HW6] / 1000.0 / 3600.0
    assert old_estimate_kwh < budget < 142.0, "the old table let it through; the car's own model cannot finish it"
    _start_shard(car, work)  # what the car's model does with it: too hot well before the end
    t = car.t
    while not car.pack_too_hot:
        t += 60.0
        car.advance(t)
    assert car.shard is not None and car.shard.done_tera_ops < 0.05 * work

    need = Need(min_tops=1.0, work_tera_ops=work)
    book = OfferBook(MatchPolicy.ENERGY_AWARE)
    book.put(_offer("hw6", HW6, local_h=14.0, budget=budget, pack_c=22.0))
    assert book.match(need, 0.0) is None
    assert book.analyze(need, 0.0)[0] == {"energy budget covers the shard": 1}


def test_a_shard_the_battery_covers_waits_for_a_cool_hour() -> None:
    one_hour = HARDWARE_POWER[HW6].tops * HOUR  # 5.12 kWh: the battery is not the limit, the heat is
    need = Need(min_tops=1.0, work_tera_ops=one_hour)
    afternoon = OfferBook(MatchPolicy.ENERGY_AWARE)
    afternoon.put(_offer("hw6", HW6, local_h=14.0, pack_c=30.0))
    assert afternoon.match(need, 0.0) is None
    assert afternoon.analyze(need, 0.0)[0] == {"pack stays below its heat limit for the shard": 1}
    night = OfferBook(MatchPolicy.ENERGY_AWARE)
    night.put(_offer("hw6", HW6, local_h=2.0, pack_c=12.0))
    assert night.match(need, 0.0) is not None
    fastest = OfferBook(MatchPolicy.FASTEST)  # other policies do not plan energy
    fastest.put(_offer("hw6", HW6, local_h=14.0, pack_c=30.0))
    assert fastest.match(need, 0.0) is not None


# helpers -----------------------------------------------------------------------------------
def _offer(vid: str, hw: HardwareGeneration, *, local_h: float, budget: float = 60.0,
           pack_c: float | None = None) -> Offer:
    return Offer(vehicle_id=vid, offer_id="o", hardware=hw, free_tops=HARDWARE_POWER[hw].tops, price_per_tops_hour=0.1,
                 offered_at_s=0.0, departure_at_s=30 * HOUR, energy_budget_kwh=budget, soc=0.8,
                 pack_temp_c=pack_c, local_offered_s=local_h * HOUR)


def _parked_car(generation: HardwareGeneration, *, soc: float, pack_c: float, at: float,
                battery: float | None = None) -> Car:
    car = Car.create(3, vehicle_id(7, 3), 7_000_024, [(1.0, generation)], 0.0, at, random.Random())
    car.model = CYBERTRUCK if battery is None else CarModel("test-pack", battery, 0.2, 1.0)
    car.driving, car.owner_back, car.arrived_at, car.charger_kw = False, False, -1e18, 0.0
    car.next_at = at + 30 * 86_400.0  # the owner stays away while we watch
    car.soc, car.reserve_soc, car.pack_temp_c, car.pack_too_hot, car.t = soc, 0.2, pack_c, False, at
    return car


def _start_shard(car: Car, work: float) -> None:
    now = datetime.now(UTC)
    a = ShardAssignment(
        sender="dispatcher", sent_at=now, sim_time=now, assignment_id="a1", vehicle_id=car.vehicle_id, job_id="j1",
        shard_id="s1", work_tera_ops=work, input_digest="ab" * 16, allocated_tops=car.hardware.tops,
        checkpoint_interval_s=60.0, price_per_tops_hour=1.0,
    )
    car.shard = RunningShard(a, car.hardware.tops, car.t, None)
