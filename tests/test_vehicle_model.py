"""The pure car model: a day of stays, battery reserve, pack hysteresis, vetoes, deterministic replay."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime

import pytest

from fake_vehicles.car import SETTLE_S, Car
from fake_vehicles.catalogue import (
    DEFAULT_HARDWARE_MIX,
    HARDWARE,
    MixError,
    parse_hardware_mix,
)
from fake_vehicles.faults import FaultSpecError, parse_faults
from fake_vehicles.ids import ShardSpecError, owned_indices, parse_shard, vehicle_id
from protocol import owner_day as days
from protocol.base import HardwareGeneration
from protocol.power import HOT_RESUME_C, HOT_STOP_C
from protocol.vehicle_messages import OwnerMode, SuspendReason

MONDAY_10AM = datetime(2026, 11, 30, 10, 0, tzinfo=UTC).timestamp()
MIX = [(share, gen) for gen, share in DEFAULT_HARDWARE_MIX.items()]


Mix = list[tuple[float, HardwareGeneration]]


def make_car(index: int, seed: int = 7, t: float = MONDAY_10AM, mix: Mix = MIX) -> Car:
    return Car.create(index, vehicle_id(seed, index), seed * 1_000_003 + index, mix, 0.0, t, random.Random())


def live_week(car: Car, start: float, rng: random.Random) -> tuple[float, list[tuple[float, float]]]:
    """Drive `car` through a week of events; return (seconds driving, [(arrival time of day, stay s)])."""
    end = start + 7 * days.DAY
    driving_s, t, stays, arrived = 0.0, start, [], None
    while (at := car.next_event_at()) <= end:
        event = car.on_event(at, rng)
        if event == "arrive":
            driving_s += at - t
            arrived = at
        elif event == "depart":
            t = at
            if arrived is not None:
                stays.append((arrived % days.DAY, at - arrived))
    if car.driving:
        driving_s += end - t
    return driving_s, stays


def test_a_default_fleet_is_parked_93_to_97_percent_of_a_week() -> None:
    rng = random.Random(1)
    cars = [make_car(i) for i in range(400)]
    results = [live_week(car, MONDAY_10AM, rng) for car in cars]
    parked_share = 1 - sum(d for d, _ in results) / (len(cars) * 7 * days.DAY)
    assert 0.93 <= parked_share <= 0.97, parked_share


def test_stays_are_a_time_of_day_mixture_of_short_and_long() -> None:
    rng = random.Random(2)
    stays = [s for i in range(300) for s in live_week(make_car(i), MONDAY_10AM, rng)[1]]
    short = [s for _, s in stays if s < days.HOUR]
    long = [s for _, s in stays if s > 4 * days.HOUR]
    assert len(short) > 0.2 * len(stays) and len(long) > 0.2 * len(stays)

    def short_share(lo: float, hi: float) -> float:
        group = [s for tod, s in stays if lo * days.HOUR <= tod < hi * days.HOUR]
        return sum(s < days.HOUR for s in group) / len(group)

    morning, midday, evening = short_share(5, 10), short_share(11, 16), short_share(17, 24)
    assert morning < 0.2 < evening < midday, (morning, midday, evening)  # arrive at work, errands, home


def _computing_car(generation: HardwareGeneration, **traits: object) -> Car:
    car = make_car(3, mix=[(1.0, generation)])
    car.owner_mode, car.night_only, car.driving, car.arrived_at, car.owner_back = (
        OwnerMode.COMPUTE, False, False, -1e18, False)
    car.charger_kw = 0.0
    car.home_charger = car.work_charger = False
    car.next_at = car.t + 30 * days.DAY  # the owner stays away while we watch
    for name, value in traits.items():
        setattr(car, name, value)
    return car


def _start_shard(car: Car, tera_ops: float) -> None:
    from fake_vehicles.work import RunningShard
    from protocol.job_messages import ShardAssignment

    a = ShardAssignment(
        sender="dispatcher", sent_at=datetime.now(UTC), sim_time=datetime.now(UTC), assignment_id="a1",
        vehicle_id=car.vehicle_id, job_id="j1", shard_id="s1", work_tera_ops=tera_ops, input_digest="ab" * 16,
        allocated_tops=car.hardware.tops, checkpoint_interval_s=60.0, price_per_tops_hour=1.0,
    )
    car.shard = RunningShard(a, car.hardware.tops, car.t, None)


def test_compute_never_spends_the_owners_reserve() -> None:
    car = _computing_car(HardwareGeneration.HW6, soc=0.6, pack_temp_c=0.0)
    car.pack_too_hot = False
    _start_shard(car, 1e12)
    t = car.t
    for _ in range(2000):  # steps of uneven length, as ticks are
        t += 37.0 if _ % 3 else 611.0
        car.advance(t)
        car.pack_temp_c, car.pack_too_hot = 0.0, False  # keep the pack out of this test
        assert car.soc >= car.reserve_soc - 1e-12
    assert car.soc == pytest.approx(car.reserve_soc)
    assert car.suspend_reason(t) is SuspendReason.LOW_CHARGE
    assert car.energy_budget_kwh() == pytest.approx(0.0, abs=1e-9)


def test_pack_temperature_has_hysteresis() -> None:
    car = _computing_car(HardwareGeneration.HW6, soc=0.9, reserve_soc=0.05)
    car.model = type(car.model)("big", 1000.0, 0.2, 1.0)  # a pack that will not run flat first
    _start_shard(car, 1e15)
    t = car.t
    while not car.pack_too_hot:
        t += 60.0
        car.advance(t)
        assert t < MONDAY_10AM + days.DAY, "an HW6 at full load heats the pack past the stop point"
    seen_hot = car.pack_temp_c >= HOT_STOP_C
    assert seen_hot and car.suspend_reason(t) is SuspendReason.PACK_TOO_HOT
    car.shard = None  # the fleet preempts; the pack cools
    between = False
    while car.pack_too_hot:
        t += 60.0
        car.advance(t)
        if HOT_RESUME_C < car.pack_temp_c < HOT_STOP_C:
            between = True
            assert car.suspend_reason(t) is SuspendReason.PACK_TOO_HOT, "no resume until below the lower mark"
    assert between and car.pack_temp_c <= HOT_RESUME_C
    assert car.suspend_reason(t) is None


def test_each_veto_has_its_reason() -> None:
    car = _computing_car(HardwareGeneration.HW5, soc=0.8)
    t = car.t
    assert car.suspend_reason(t) is None
    car.driving = True
    assert car.suspend_reason(t) is SuspendReason.NOT_IN_PARK
    car.driving, car.arrived_at = False, t - SETTLE_S / 2
    assert car.suspend_reason(t) is SuspendReason.DRIVER_PRESENT
    car.arrived_at, car.owner_back = -1e18, True
    assert car.suspend_reason(t) is SuspendReason.UNLOCKED
    car.owner_back = False
    car.soc = car.reserve_soc + 0.001
    assert car.suspend_reason(t) is SuspendReason.LOW_CHARGE
    car.soc, car.pack_too_hot = 0.8, True
    assert car.suspend_reason(t) is SuspendReason.PACK_TOO_HOT
    car.pack_too_hot, car.night_only = False, True
    assert car.suspend_reason(t) is SuspendReason.OWNER_SCHEDULE  # 10:00
    assert car.suspend_reason(t + 13 * days.HOUR) is None  # 23:00
    car.night_only, car.owner_mode = False, OwnerMode.ROBOTAXI
    assert car.suspend_reason(t) is SuspendReason.ROBOTAXI_DUTY
    car.owner_mode = OwnerMode.NONE
    assert car.suspend_reason(t) is SuspendReason.OWNER_OPTED_OUT
    car.owner_mode = OwnerMode.COMPUTE
    update_night = next(
        d for d in range(int(t // days.DAY), int(t // days.DAY) + 30) if ((car.seed >> 5) + d) % 11 == 0
    )
    at = update_night * days.DAY + 2.2 * days.HOUR
    assert car.suspend_reason(at) is SuspendReason.SOFTWARE_UPDATE


def test_replay_with_a_seed_is_identical_and_independent_of_other_cars() -> None:
    def trace(index: int, rng_seed: int) -> list[tuple[str, float, float]]:
        car = make_car(index)
        rng = random.Random(rng_seed)
        out = []
        for _ in range(40):
            at = car.next_event_at()
            out.append((car.on_event(at, rng), at, round(car.soc, 9)))
        return out

    assert trace(5, 1) == trace(5, 99)  # the caller's generator state does not matter
    assert trace(5, 1) != trace(6, 1)


def test_catalogue_states_a_source_for_every_figure() -> None:
    assert HARDWARE[HardwareGeneration.HW3].tops == 144
    assert HARDWARE[HardwareGeneration.HW5].tops == 5_000
    assert HARDWARE[HardwareGeneration.HW6].tops == 20_000
    assert HARDWARE[HardwareGeneration.HW4].tops * 40 == 5_000
    assert "assumption" in HARDWARE[HardwareGeneration.HW4].tops_source
    for hw in HARDWARE.values():
        assert hw.tops_source and hw.power_source and hw.compute_power_kw > 0


def test_vehicle_ids_are_unique_pseudonyms_and_shards_partition_them() -> None:
    ids = [vehicle_id(42, i) for i in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"car-[0-9a-f]{10}", v) for v in ids[:1000])
    assert vehicle_id(42, 7) != vehicle_id(43, 7)
    parts = [set(owned_indices(0, 1000, i, 3)) | set(owned_indices(1000, 1500, i, 3)) for i in range(3)]
    assert set.union(*parts) == set(range(1500)) and sum(map(len, parts)) == 1500
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ShardSpecError):
            parse_shard(bad)


def test_flags_parse_or_say_why() -> None:
    mix = parse_hardware_mix("HW5=3,hw6=1")
    assert mix == {HardwareGeneration.HW5: 0.75, HardwareGeneration.HW6: 0.25}
    for bad in ("HW9=1", "HW5", "HW5=-1", "HW5=0"):
        with pytest.raises(MixError):
            parse_hardware_mix(bad)
    faults = parse_faults(["dropped-signals=0.2,silent", "duplicate-connectivity=0.5"])
    assert (faults.dropped_signals, faults.silent_per_day, faults.duplicate_connectivity) == (0.2, 0.01, 0.5)
    with pytest.raises(FaultSpecError):
        parse_faults(["gremlins=0.1"])
