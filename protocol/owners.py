"""The owner's money on the wire: owner modes, robotaxi trips, the fare model and the ledger's earnings.

A car in robotaxi (or both) mode reports each paid trip (`RobotaxiTrip`, on its own `trips`
topic); the dispatcher prices it with `fare_for` and books the owner's share in the ledger, next
to compute income, so that both come from the one source. The dispatcher publishes what the
ledger says: a retained `EarningsReport` every few seconds (fleet, per mode, the top cars and
owners: bounded whatever the fleet's size) and a retained `CarEarnings` per car on a topic the
control room subscribes to only for the car in view. Every number of the fare model is an
assumption, listed with its source in `ASSUMPTIONS` (and in docs/DISPATCHER.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from protocol.base import Identifier, Kwh, Message, NonNegative, WireModel
from protocol.vehicle_messages import OwnerMode

ROBOTAXI_MODES = frozenset({OwnerMode.ROBOTAXI, OwnerMode.BOTH})
"""Owner modes in which a car carries riders."""
COMPUTE_MODES = frozenset({OwnerMode.COMPUTE, OwnerMode.BOTH})
"""Owner modes in which a car may compute (in both mode only outside robotaxi hours)."""


@dataclass(frozen=True, slots=True)
class Assumption:
    """One number of the money model: its value, unit and where it comes from."""

    name: str
    value: float
    unit: str
    source: str


FARE_BASE = Assumption("fare_base", 2.50, "USD per trip", "assumption: a US ride-hail base fare, order of magnitude")
FARE_PER_KM = Assumption("fare_per_km", 1.00, "USD per km", "assumption: about 1.60 USD a mile, US ride-hail range")
FARE_PER_MIN = Assumption("fare_per_min", 0.30, "USD per minute", "assumption: US ride-hail per-minute range")
OWNER_SHARE = Assumption("owner_share", 0.50, "of each fare", "assumption: no published split for owners' cars")
TRIP_KM = Assumption("trip_km", 9.0, "km per paid trip", "assumption: a typical urban ride-hail trip")
TRIP_MIN = Assumption("trip_min", 18.0, "minutes per paid trip", "assumption: trip_km at 30 km/h")
PAID_SHARE = Assumption("paid_share", 0.25, "of robotaxi hours with a rider",
                        "assumption: utilisation of a car on robotaxi duty")
EMPTY_KM = Assumption("empty_km_per_paid_km", 0.4, "km", "assumption: driving to the next rider, unpaid")
DEMAND_FROM = Assumption("robotaxi_from_h", 7.0, "hour of day", "assumption: riders want rides 07:00-22:00")
DEMAND_TO = Assumption("robotaxi_to_h", 22.0, "hour of day", "assumption: after 22:00 a 'both' car computes")
CAR_PAYMENT = Assumption("car_payment", 740.0, "USD per month",
                         "assumption: near the US average new-car loan payment reported for 2024 (~738 USD)")
DAYS_PER_MONTH = Assumption("days_per_month", 30.0, "days", "convention")
ASSUMPTIONS: tuple[Assumption, ...] = (
    FARE_BASE, FARE_PER_KM, FARE_PER_MIN, OWNER_SHARE, TRIP_KM, TRIP_MIN, PAID_SHARE, EMPTY_KM,
    DEMAND_FROM, DEMAND_TO, CAR_PAYMENT, DAYS_PER_MONTH,
)
"""The money model's numbers in one table; the electricity price is the dispatcher's `--energy-price`."""
CLAIM_FREE_MOBILITY = 'claim (essay): owning a car that earns "makes mobility free"'
MAX_TRIP_KMH = 130.0  # a trip claiming a faster average is refused
MAX_TRIP_S = 6 * 3600.0
MAX_TRIP_PAID_KM = 200.0  # assumption: no ride-hail trip is longer (an airport run across a region); longer is refused


def fare_for(distance_km: float, duration_s: float) -> float:
    """What riders pay for one trip under the assumed fare model (before the owner's share)."""
    return FARE_BASE.value + FARE_PER_KM.value * distance_km + FARE_PER_MIN.value * duration_s / 60.0


def owner_income_for(distance_km: float, duration_s: float) -> float:
    """The owner's share of one trip's fare."""
    return OWNER_SHARE.value * fare_for(distance_km, duration_s)


def in_robotaxi_hours(seconds_of_day: float) -> bool:
    """Whether riders want rides at this local time of day (seconds since midnight)."""
    return DEMAND_FROM.value * 3600.0 <= seconds_of_day % 86400.0 < DEMAND_TO.value * 3600.0


class RobotaxiTrip(Message):
    """A car's report of one paid robotaxi trip: the dispatcher prices it and books it once."""

    kind: Literal["robotaxi_trip"] = "robotaxi_trip"
    trip_id: Identifier
    paid_km: float = Field(gt=0.0, le=1000.0)
    empty_km: float = Field(ge=0.0, le=1000.0)
    duration_s: float = Field(gt=0.0, le=MAX_TRIP_S)
    energy_kwh: Kwh


class SetOwnerMode(Message):
    """Operator command to a fleet process: this car's owner now lets it earn this way."""

    kind: Literal["set_owner_mode"] = "set_owner_mode"
    vehicle_id: Identifier
    owner_mode: OwnerMode


class Money(WireModel):
    """The ledger's money for a car, an owner, a mode or the fleet; `net` = gross - energy cost."""

    compute_gross: NonNegative = 0.0
    robotaxi_gross: NonNegative = 0.0
    energy_cost: NonNegative = 0.0
    net: float = Field(default=0.0, allow_inf_nan=False)
    compute_tops_hours: NonNegative = 0.0
    robotaxi_trips: int = Field(default=0, ge=0)
    robotaxi_km: NonNegative = 0.0

    @property
    def gross(self) -> float:
        return self.compute_gross + self.robotaxi_gross


class CarMoney(WireModel):
    """One car's line in an earnings report."""

    vehicle_id: Identifier
    owner_id: Identifier
    owner_mode: OwnerMode
    money: Money


class OwnerMoney(WireModel):
    """One owner's line: the sum over the owner's cars."""

    owner_id: Identifier
    cars: int = Field(ge=0)
    money: Money


class ModeMoney(WireModel):
    """What cars earned while in one owner mode, and per car per day and month of that mode."""

    owner_mode: OwnerMode
    cars: int = Field(ge=0)  # cars in this mode now
    car_days: NonNegative  # simulated days cars spent in this mode
    money: Money
    net_per_car_day: float = Field(allow_inf_nan=False)
    net_per_car_month: float = Field(allow_inf_nan=False)
    payment_share: float = Field(allow_inf_nan=False)  # net per car-month / the assumed car payment


class CarEarnings(Message):
    """The ledger's figures for one car, retained on its own topic below the dispatcher's."""

    kind: Literal["car_earnings"] = "car_earnings"
    car: CarMoney
    currency: str = "USD"


class EarningsReport(Message):
    """The ledger's earnings, retained, every few seconds: fleet, modes, top cars and owners."""

    kind: Literal["earnings"] = "earnings"
    fleet: Money
    cars: int = Field(ge=0)
    owners: int = Field(ge=0)
    by_mode: list[ModeMoney] = Field(max_length=8)
    top_cars: list[CarMoney] = Field(max_length=100)  # by net, highest first
    top_owners: list[OwnerMoney] = Field(max_length=50)
    car_payment_per_month: NonNegative = CAR_PAYMENT.value
    currency: str = "USD"
