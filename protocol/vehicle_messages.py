"""What a car says about itself: status, telemetry, compute offers and withdrawals.

Telemetry fields are named after Tesla's open fleet-telemetry signals where one exists; the
mapping is in `TELEMETRY_SIGNAL_MAP` and in docs/PROTOCOL.md.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from protocol.base import (
    CarTops,
    CarTopsOrZero,
    Fraction,
    HardwareGeneration,
    Identifier,
    Kw,
    Kwh,
    Message,
    NonNegative,
    Positive,
    Price,
    Text,
    WireModel,
)

HARDWARE_TOPS: dict[HardwareGeneration, float] = {
    HardwareGeneration.HW3: 144.0,  # public figure: about 144 TOPS (two chips)
    HardwareGeneration.HW4: 125.0,  # the essay's "HW5 is 40x HW4": 5,000 / 40
    HardwareGeneration.HW5: 5_000.0,  # the essay: about 5,000 TOPS
    HardwareGeneration.HW6: 20_000.0,  # the essay's "tens of thousands of TOPS?", taken as 20,000
}
"""The peak TOPS of each hardware generation: no car of that generation can offer more.

The emulated fleet's catalogue takes its figures from here (with their sources), and the
dispatcher refuses offers and telemetry that claim more.
"""


class Liveness(StrEnum):
    """Whether a car (or a fleet connection) is reachable."""

    ONLINE = "online"
    ASLEEP = "asleep"
    OFFLINE = "offline"


class ChargeState(StrEnum):
    """fleet-telemetry `DetailedChargeState`, simplified."""

    DISCONNECTED = "disconnected"
    NO_POWER = "no_power"
    STARTING = "starting"
    CHARGING = "charging"
    COMPLETE = "complete"
    STOPPED = "stopped"


class Gear(StrEnum):
    """fleet-telemetry `Gear` (P, R, N, D)."""

    PARK = "P"
    REVERSE = "R"
    NEUTRAL = "N"
    DRIVE = "D"


class OwnerMode(StrEnum):
    """How the owner lets an idle car earn."""

    COMPUTE = "compute"
    ROBOTAXI = "robotaxi"
    BOTH = "both"  # robotaxi while riders want rides, compute the rest of the time
    NONE = "none"  # neither


class ComputeState(StrEnum):
    """What the car's computer is doing for the fleet right now."""

    IDLE = "idle"  # eligible, offering, no shard
    BUSY = "busy"  # running a shard
    VACATING = "vacating"  # owner returning: checkpointing before driving away
    SUSPENDED = "suspended"  # not eligible; `suspend_reason` says why


class SuspendReason(StrEnum):
    """Why a car may not compute now, in the manner of BOINC's suspend reasons."""

    NOT_IN_PARK = "not_in_park"
    DRIVER_PRESENT = "driver_present"
    UNLOCKED = "unlocked"
    SOFTWARE_UPDATE = "software_update"
    LOW_CHARGE = "low_charge"
    PACK_TOO_HOT = "pack_too_hot"
    OWNER_SCHEDULE = "owner_schedule"
    OWNER_OPTED_OUT = "owner_opted_out"
    ROBOTAXI_DUTY = "robotaxi_duty"
    UNRELIABLE = "unreliable"


class Location(WireModel):
    """fleet-telemetry `Location`, rounded to about 1 km so that telemetry does not reveal a home."""

    latitude: float = Field(ge=-90.0, le=90.0)
    longitude: float = Field(ge=-180.0, le=180.0)


class VehicleStatus(Message):
    """The retained liveness of one car; its `offline` form is the car's Last Will."""

    kind: Literal["vehicle_status"] = "vehicle_status"
    state: Liveness
    hardware: HardwareGeneration | None = None
    gateway: Identifier | None = None  # set when the car shares a fleet connection
    reason: Text = ""
    owner_id: Identifier | None = None  # pseudonymous owner, for per-owner earnings; None = the car's own
    # how the owner lets the car earn (contract 1.1): sent with the status, so that the dispatcher,
    # which reads no per-car telemetry, knows it; None from a 1.0 sender (telemetry still says it)
    owner_mode: OwnerMode | None = None


class ConnectionStatus(Message):
    """The retained liveness of a process connection (fleet gateway, dispatcher, control room)."""

    kind: Literal["connection_status"] = "connection_status"
    role: Literal["gateway", "dispatcher", "operator", "observer"]
    state: Liveness
    vehicle_count: int = Field(default=0, ge=0)
    # which run of the process holds the name (its start time and random bits): two fleet
    # processes started with the same seed tell each other apart by it; empty if unknown
    instance: Annotated[str, StringConstraints(pattern=r"^([a-z0-9][a-z0-9_.-]{0,63})?$", strict=True)] = ""
    # a gateway that speaks for its cars in frames (protocol.frames): rosters and offer frames, no
    # per-car statuses or offers; receivers of wire contract 1.0 do not read frames (1.1)
    frames: bool = False


class VehicleTelemetry(Message):
    """Periodic telemetry (QoS 0): what a real car reports, plus what compute needs."""

    kind: Literal["telemetry"] = "telemetry"
    soc: Fraction  # Soc
    charge_state: ChargeState  # DetailedChargeState
    gear: Gear  # Gear
    location: Location  # Location
    vehicle_speed_kmh: NonNegative  # VehicleSpeed
    pack_temp_c: float = Field(ge=-60.0, le=120.0)  # ModuleTempMax
    inside_temp_c: float = Field(ge=-60.0, le=90.0)  # InsideTemp
    scheduled_departure: AwareDatetime | None = None  # ScheduledDepartureTime
    locked: bool  # Locked
    driver_seat_occupied: bool  # DriverSeatOccupied
    software_update_in_progress: bool  # SoftwareUpdateInstallationPercentComplete > 0
    battery_kwh: CarTops  # pack usable energy (catalogue figure, not a signal)
    odometer_km: NonNegative = 0.0  # Odometer
    hardware: HardwareGeneration
    rated_tops: CarTops
    tops_in_use: CarTopsOrZero
    compute_power_kw: Kw
    owner_mode: OwnerMode
    compute_state: ComputeState
    suspend_reason: SuspendReason | None = None
    shard: Identifier | None = None  # assignment currently running
    earned: Price = 0.0  # gross earnings so far, in the offer's currency


TELEMETRY_SIGNAL_MAP: dict[str, str] = {
    "soc": "Soc",
    "charge_state": "DetailedChargeState",
    "gear": "Gear",
    "location": "Location",
    "vehicle_speed_kmh": "VehicleSpeed",
    "pack_temp_c": "ModuleTempMax",
    "inside_temp_c": "InsideTemp",
    "scheduled_departure": "ScheduledDepartureTime",
    "locked": "Locked",
    "driver_seat_occupied": "DriverSeatOccupied",
    "software_update_in_progress": "SoftwareUpdateInstallationPercentComplete",
    "odometer_km": "Odometer",
}
"""Our field name -> the fleet-telemetry signal it stands for."""


class OfferRequirements(WireModel):
    """The car's side of the match (a ClassAd `Requirements`): what work it will take."""

    min_price_per_tops_hour: Price = 0.0
    max_shard_hours: Positive | None = None
    max_priority_wait: int | None = None  # reserved; None = any


class ComputeOffer(Message):
    """A ClassAd-like statement that a parked car can take work now."""

    kind: Literal["offer"] = "offer"
    offer_id: Identifier
    hardware: HardwareGeneration
    free_tops: CarTops
    energy_budget_kwh: Kwh
    expected_departure: AwareDatetime
    departure_confidence: Fraction
    price_per_tops_hour: Price
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    soc: Fraction
    region: Identifier = "unknown"
    requirements: OfferRequirements = OfferRequirements()
    pack_temp_c: float | None = Field(default=None, ge=-60.0, le=120.0)  # ModuleTempMax: the heat planning starts here


class OfferWithdrawal(Message):
    """The car no longer offers compute (it leaves, is busy in full, or became ineligible)."""

    kind: Literal["offer_withdrawn"] = "offer_withdrawn"
    offer_id: Identifier
    reason: Text
