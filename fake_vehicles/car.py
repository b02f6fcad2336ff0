"""One emulated car as a pure model: where it is, its battery and pack, and whether it may compute.

Times are local simulation seconds since 1970-01-01 (so `t % DAY` is the time of day). The
caller passes the time and a `random.Random` into every method; the car reseeds that generator
from its own seed and the day, so a car's life does not depend on which other cars exist or on
when it is looked at. State is kept in `__slots__` so that a million cars fit in memory.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
from _random import Random as _CoreRandom
from datetime import datetime
from enum import StrEnum

from fake_vehicles.catalogue import (
    CAR_MODELS,
    ELECTRICITY_PRICE_PER_KWH,
    FAST_CHARGER_KW,
    HARDWARE,
    HOME_CHARGER_KW,
    WORK_CHARGER_KW,
    CarModel,
    Hardware,
)
from fake_vehicles.work import CHECKPOINT_PREFIX, RunningShard
from protocol import owner_day as days
from protocol import power
from protocol.base import HardwareGeneration
from protocol.job_messages import ShardAssignment
from protocol.owners import in_robotaxi_hours
from protocol.power import HOT_RESUME_C, HOT_STOP_C, ambient_c
from protocol.vehicle_messages import ChargeState, ComputeState, Liveness, OwnerMode, SuspendReason

_seed = _CoreRandom.seed
UPDATE_START_S = 2 * days.HOUR  # a night's software update installs from 02:00 ...
UPDATE_LENGTH_S = 0.75 * days.HOUR  # ... for 45 minutes

DRIVE_SPEED_KMH = 40.0  # assumption: average urban trip speed
CHARGE_LIMIT = 0.85  # the owner's daily charge limit
SETTLE_S = 120.0  # the driver is still in the car after parking
OWNER_RETURN_LEAD_S = 90.0  # the owner unlocks the car this long before driving off
VACATE_DEADLINE_S = 30.0  # a shard must be checkpointed and handed back within this
DETOUR_DRIVE_S = 20 * 60.0  # an unplanned round trip when told to drive away
LOW_MARGIN = 0.02  # stop offering this close to the reserve
OWNER_MODE_SHARES = ((0.8, 0), (0.1, 1), (0.1, 2))  # assumption: compute, robotaxi, none
OWNER_MODES = (OwnerMode.COMPUTE, OwnerMode.ROBOTAXI, OwnerMode.NONE)
MODEL_SHARES = [(m.share, i) for i, m in enumerate(CAR_MODELS)]
MODEL_CUMULATIVE = list(itertools.accumulate(share for share, _ in MODEL_SHARES))  # as `pick_by_share` sums them
OWNER_MODE_CUMULATIVE = list(itertools.accumulate(share for share, _ in OWNER_MODE_SHARES))
# the reserve each model keeps: 1.5 times an assumed 25 km trip there and back, within 0.2..0.5
RESERVE_SOC = {m.name: min(0.5, max(0.2, 1.5 * (2 * 25.0 * m.kwh_per_km) / m.battery_kwh)) for m in CAR_MODELS}
# Assumption: a car has been driven about 21,700 km a year (the US FHWA's average of about 13,500
# miles per driver), give or take half, for its age; the age follows the hardware it carries
# (HW3 shipped 2019-2023, HW4 from 2023; HW5 and HW6 are the essay's coming hardware: new cars).
TYPICAL_ANNUAL_KM = 21_700.0
AGE_YEARS = {HardwareGeneration.HW3: (2.0, 7.0), HardwareGeneration.HW4: (0.0, 3.0),
             HardwareGeneration.HW5: (0.0, 1.0), HardwareGeneration.HW6: (0.0, 0.5)}


UNPLACED = -1  # `leg_idx` of a car whose traits are drawn but that is not placed in its owner's day yet


def reseed(rng: random.Random, seed: int) -> None:
    """`rng.seed(seed)` for an int seed without random.py's type checks: a car reseeds twice as it joins."""
    _seed(rng, seed)
    rng.gauss_next = None  # type: ignore[attr-defined]  # as random.Random.seed does


@functools.lru_cache(maxsize=64)
def _running_sums(shares: tuple[tuple[float, HardwareGeneration], ...]) -> tuple[list[float], list[HardwareGeneration]]:
    return list(itertools.accumulate(share for share, _ in shares)), [item for _, item in shares]


def _pick_from(mix: list[tuple[float, HardwareGeneration]], u: float) -> HardwareGeneration:
    """`pick_by_share(mix, u)`, from the mix's running sums (computed once per mix)."""
    sums, items = _running_sums(tuple(mix))
    return items[_pick(sums, u)]


def _pick(cumulative: list[float], u: float) -> int:
    """The index `pick_by_share` would pick for `u`, from the shares' running sums."""
    return min(bisect.bisect_right(cumulative, u), len(cumulative) - 1)


class Defect(StrEnum):
    """A defect built into a car on purpose (`--faulty-share`), for the dispatcher to catch."""

    NONE = "none"
    WRONG_RESULTS = "wrong_results"  # returns a digest that differs from the honest one
    VANISHES = "vanishes"  # goes silent part-way through a shard, the shard lost with it


class CarEvent(StrEnum):
    """A change of phase in the owner's day, as `Car.on_event` reports it."""

    SETTLED = "settled"  # the driver has left the parked car: it may offer now
    OWNER_BACK = "owner_back"  # the owner unlocks the car shortly before driving off
    DEPART = "depart"
    ARRIVE = "arrive"


def initial_odometer_km(generation: HardwareGeneration, rng: random.Random) -> float:
    """A plausible odometer for a car of this hardware when the simulation starts: its age times a yearly distance."""
    low, high = AGE_YEARS.get(generation, (0.0, 3.0))
    age = low + (high - low) * rng.random()  # rng.uniform(low, high), as random.py computes it
    return round(age * TYPICAL_ANNUAL_KM * (0.5 + (1.5 - 0.5) * rng.random()), 1)


class Car:
    """One car: fixed traits, position in its owner's day, battery, pack and running shard."""

    __slots__ = (
        "arrived_at", "charger_kw", "confident", "day", "defect", "drive_s", "driving", "earned", "hardware",
        "home_charger", "index", "leg_idx", "model", "next_at", "next_dest", "night_only", "odometer_km",
        "offer_id", "offer_seq", "owner_back", "owner_mode", "pack_temp_c", "pack_too_hot", "place", "price",
        "profile", "region", "reserve_soc", "seed", "shard", "silent", "soc", "status_reason", "status_state", "t",
        "unplanned_trip", "vehicle_id", "work_charger",
    )

    def __init__(self, index: int, vehicle_id: str, seed: int, hardware: Hardware, model: CarModel) -> None:
        self.index, self.vehicle_id, self.seed = index, vehicle_id, seed
        self.hardware, self.model = hardware, model
        self.profile, self.owner_mode, self.defect, self.region = days.COMMUTER, OwnerMode.COMPUTE, Defect.NONE, 0
        self.home_charger, self.work_charger, self.night_only = True, False, False
        self.reserve_soc, self.price = 0.2, 0.0
        self.t, self.soc, self.pack_temp_c = 0.0, 0.7, 15.0
        self.pack_too_hot = False  # latched at HOT_STOP_C, cleared at HOT_RESUME_C
        self.odometer_km, self.earned = 0.0, 0.0
        self.place, self.driving, self.day, self.leg_idx = days.HOME, False, 0, 0
        self.next_at, self.drive_s, self.next_dest, self.confident = 0.0, 0.0, days.HOME, False
        self.arrived_at, self.owner_back, self.charger_kw = -math.inf, False, 0.0
        self.unplanned_trip = False  # a drive-away round trip: the car comes back to where it was
        self.shard: RunningShard | None = None
        self.offer_id: str | None = None
        self.offer_seq, self.silent = 0, False
        self.status_state: Liveness | None = None  # the status a gateway's roster lists (None: not listed yet)
        self.status_reason = ""

    # creation ------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, index: int, vehicle_id: str, seed: int, mix: list[tuple[float, HardwareGeneration]],
        faulty_share: float, t: float, rng: random.Random, *, place: bool = True,
    ) -> Car:
        """A car with traits drawn from `seed`, placed where its owner's day has it at `t`.

        With `place=False` only its traits are drawn and `t` kept: `place_at(car.t, rng)` places it
        later exactly as it would have been placed now (a fleet joins cars faster that way).
        """
        reseed(rng, seed)
        draw = rng.random
        hardware = HARDWARE[_pick_from(mix, draw())]
        car = cls(index, vehicle_id, seed, hardware, CAR_MODELS[_pick(MODEL_CUMULATIVE, draw())])
        car.profile = days.COMMUTER if draw() < days.COMMUTER_SHARE else days.HOMEBODY
        car.owner_mode = OWNER_MODES[_pick(OWNER_MODE_CUMULATIVE, draw())]
        car.night_only = draw() < 0.1
        car.home_charger = draw() < 0.85
        car.work_charger = draw() < 0.3
        if draw() < faulty_share:
            car.defect = Defect.WRONG_RESULTS if draw() < 0.5 else Defect.VANISHES
        car.soc = 0.45 + (0.9 - 0.45) * draw()  # rng.uniform(0.45, 0.9), as random.py computes it
        car.reserve_soc = RESERVE_SOC[car.model.name]
        markup = 1.5 + (3.0 - 1.5) * draw()  # rng.uniform(1.5, 3.0)
        car.price = hardware.compute_power_kw / hardware.tops * ELECTRICITY_PRICE_PER_KWH * markup
        region = rng.getrandbits(3)  # rng.randrange(4), as random.py draws it
        while region >= 4:
            region = rng.getrandbits(3)
        car.region = region
        car.odometer_km = initial_odometer_km(hardware.generation, rng)  # drawn last: earlier traits unchanged
        car.t = t
        if place:
            car.place_at(t, rng)
        else:
            car.leg_idx = UNPLACED
        return car

    @property
    def placed(self) -> bool:
        return self.leg_idx != UNPLACED

    def place_at(self, t: float, rng: random.Random) -> None:
        """Put the car where its plan has it at `t` (start-up, or joining a running fleet)."""
        self.t = t
        self.day = int(t // days.DAY)
        legs = self.plan(self.day, rng)
        i, self.place, self.driving = days.position_at(legs, t - self.day * days.DAY)
        self.pack_temp_c = ambient_c(t)
        if self.driving:
            leg = legs[i]
            self.next_at = self.day * days.DAY + leg.depart_s + leg.drive_s
            self.leg_idx = i + 1
        else:
            self.leg_idx = i
            self.schedule_next(t, rng, legs)
        self.charger_kw = 0.0 if self.driving else self.charger_at(self.place)

    # the owner's day -----------------------------------------------------------------------
    def plan(self, day: int, rng: random.Random) -> list[days.Leg]:
        reseed(rng, self.seed * 100_003 + day)
        return days.day_plan(self.profile, (day + 3) % 7, rng)

    def schedule_next(self, t: float, rng: random.Random, legs: list[days.Leg] | None = None) -> None:
        """Find the next planned departure after `t` (never sooner than a minimal stay); `legs`: today's, if known."""
        if legs is None:
            legs = self.plan(self.day, rng)
        while self.leg_idx >= len(legs):
            self.day += 1
            self.leg_idx = 0
            legs = self.plan(self.day, rng)
        leg = legs[self.leg_idx]
        self.next_at = max(self.day * days.DAY + leg.depart_s, t + days.MIN_STAY_S)
        self.drive_s, self.next_dest, self.confident = leg.drive_s, leg.dest, leg.confident

    def next_event_at(self) -> float:
        """When this car next changes phase: settles after parking, owner returns, departs, or arrives."""
        if self.driving or self.owner_back:
            return self.next_at
        back = self.next_at - OWNER_RETURN_LEAD_S
        return min(self.arrived_at + SETTLE_S, back) if self.arrived_at > -math.inf else back

    def on_event(self, t: float, rng: random.Random) -> CarEvent:
        """Move to the next phase at `t` and say which it is."""
        self.advance(t)
        if not self.driving and not self.owner_back and self.arrived_at > -math.inf \
                and t < self.next_at - OWNER_RETURN_LEAD_S:
            self.arrived_at = -math.inf  # the driver has left the car: it may offer now
            return CarEvent.SETTLED
        if self.driving:
            self.driving, self.arrived_at, self.owner_back = False, t, False
            self.charger_kw = self.charger_at(self.place)
            self.unplanned_trip = False
            self.schedule_next(t, rng)
            return CarEvent.ARRIVE
        if not self.owner_back:
            self.owner_back = True
            return CarEvent.OWNER_BACK
        self.driving, self.owner_back, self.charger_kw = True, False, 0.0
        self.next_at = t + self.drive_s
        if not self.unplanned_trip:
            self.place = self.next_dest
            self.leg_idx += 1
        return CarEvent.DEPART

    def drive_away_now(self, t: float) -> bool:
        """The owner returns now for an unplanned round trip; False if the car is already driving."""
        if self.driving:
            return False
        self.advance(t)
        self.unplanned_trip, self.owner_back = True, False
        self.next_at, self.drive_s = t + OWNER_RETURN_LEAD_S, DETOUR_DRIVE_S
        return True

    def charger_at(self, place: int) -> float:
        if place == days.HOME and self.home_charger:
            return HOME_CHARGER_KW
        if place == days.WORK and self.work_charger:
            return WORK_CHARGER_KW
        if place == days.ERRAND and self.soc < 0.3:
            return FAST_CHARGER_KW
        return 0.0

    # physics -------------------------------------------------------------------------------
    def compute_kw(self) -> float:
        shard = self.shard
        if shard is None or self.driving:
            return 0.0
        return power.compute_kw(self.hardware.generation, shard.tops)

    def advance(self, t: float) -> None:
        """Integrate battery, pack temperature and any running shard up to `t`."""
        dt = t - self.t
        if dt <= 0:
            return
        battery = self.model.battery_kwh
        if self.driving:
            km = DRIVE_SPEED_KMH * dt / 3600.0
            self.odometer_km += km
            self.soc = max(0.02, self.soc - km * self.model.kwh_per_km / battery)
            target = power.pack_target_c(ambient_c(t), 0.0, driving=True)
        else:
            charge_kw = self.charger_kw if self.soc < CHARGE_LIMIT else 0.0
            compute_kw = self.compute_kw()
            run_s = self._run_shard(dt, charge_kw, compute_kw) if compute_kw > 0 else 0.0
            soc = self.soc + (charge_kw * dt - compute_kw * run_s) / 3600.0 / battery
            soc = min(soc, max(self.soc, CHARGE_LIMIT))
            self.soc = max(soc, self.reserve_soc) if run_s > 0 else soc
            target = power.pack_target_c(ambient_c(t), compute_kw * (run_s / dt), charging=charge_kw > 0)
        self.pack_temp_c = power.pack_temp_after(self.pack_temp_c, target, dt)
        if self.pack_temp_c >= HOT_STOP_C:
            self.pack_too_hot = True
        elif self.pack_temp_c <= HOT_RESUME_C:
            self.pack_too_hot = False
        self.t = t

    def _run_shard(self, dt: float, charge_kw: float, compute_kw: float) -> float:
        """Run the shard for up to `dt`, never drawing the battery below the reserve."""
        assert self.shard is not None
        run_s = dt
        net_kw = charge_kw - compute_kw
        if net_kw < 0:
            headroom_kwh = (self.soc - self.reserve_soc) * self.model.battery_kwh
            run_s = min(run_s, max(0.0, headroom_kwh * 3600.0 / -net_kw))
        run_s = min(run_s, self.shard.seconds_to_finish())
        self.shard.run(run_s, compute_kw)
        return run_s

    # eligibility ---------------------------------------------------------------------------
    def updating(self, t: float) -> bool:
        """A software update installs from 02:00 to 02:45 on about one night in eleven."""
        day = int(t // days.DAY)
        tod = t - day * days.DAY
        return ((self.seed >> 5) + day) % 11 == 0 and UPDATE_START_S <= tod < UPDATE_START_S + UPDATE_LENGTH_S

    def suspend_reason(self, t: float) -> SuspendReason | None:
        """Why the car may not compute at `t`, first reason first; None if it may."""
        if self.owner_mode is OwnerMode.NONE:
            return SuspendReason.OWNER_OPTED_OUT
        if self.owner_mode is OwnerMode.ROBOTAXI or (self.owner_mode is OwnerMode.BOTH and in_robotaxi_hours(t)):
            return SuspendReason.ROBOTAXI_DUTY
        if self.driving:
            return SuspendReason.NOT_IN_PARK
        if t - self.arrived_at < SETTLE_S:
            return SuspendReason.DRIVER_PRESENT
        if self.owner_back:
            return SuspendReason.UNLOCKED
        if self.updating(t):
            return SuspendReason.SOFTWARE_UPDATE
        if self.soc < self.reserve_soc + LOW_MARGIN:
            return SuspendReason.LOW_CHARGE
        if self.pack_too_hot:
            return SuspendReason.PACK_TOO_HOT
        if self.night_only and 6 * days.HOUR <= t % days.DAY < 22 * days.HOUR:
            return SuspendReason.OWNER_SCHEDULE
        return None

    def why_not_run(self, a: ShardAssignment, t: float, sim_now: datetime) -> str | None:
        """Why this car must not run assignment `a` at `t` (`sim_now` as a datetime), or None if it may."""
        if self.shard is not None:
            return f"busy with assignment {self.shard.assignment.assignment_id}"
        reason = self.suspend_reason(t)
        if reason is not None:
            return f"not eligible: {reason.value}"
        if a.allocated_tops > self.hardware.tops * 1.000001:
            return f"allocated_tops {a.allocated_tops:g} exceeds the car's {self.hardware.tops:g} TOPS"
        if a.deadline is not None and a.deadline < sim_now:
            return "deadline already passed"
        if a.price_per_tops_hour < self.price * 0.999:
            return f"price {a.price_per_tops_hour:.3g} below the car's ask {self.price:.3g}"
        if a.checkpoint and not a.checkpoint.startswith(f"{CHECKPOINT_PREFIX}:{a.shard_id}:"):
            return f"unknown checkpoint for shard {a.shard_id}"
        return None

    def compute_state(self, reason: SuspendReason | None) -> ComputeState:
        if self.shard is not None:
            return ComputeState.VACATING if self.owner_back else ComputeState.BUSY
        return ComputeState.IDLE if reason is None else ComputeState.SUSPENDED

    def charge_state(self) -> ChargeState:
        if self.driving or self.charger_kw <= 0:
            return ChargeState.DISCONNECTED
        return ChargeState.CHARGING if self.soc < CHARGE_LIMIT else ChargeState.COMPLETE

    def energy_budget_kwh(self) -> float:
        """Energy the car may spend on compute: what is above the owner's reserve."""
        return max(0.0, (self.soc - self.reserve_soc) * self.model.battery_kwh)

    def expected_departure(self) -> tuple[float, float]:
        """(when the car expects to leave, confidence): routine departures are better known."""
        confidence = 0.85 if self.confident else 0.5
        noise = ((self.seed >> 11) % 1000 / 1000.0 - 0.5) * (1 - confidence) * 2 * days.HOUR
        return max(self.t, self.next_at + noise), confidence
