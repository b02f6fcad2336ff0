"""The hardware and battery catalogue of the emulated fleet, each figure with its source.

The TOPS and power of each generation come from the wire contract (`protocol.power.HARDWARE_POWER`,
whose TOPS are `protocol.vehicle_messages.HARDWARE_TOPS`): the one model the dispatcher's
energy-aware policy plans with and checks offers against.

Figures marked "essay" come from ../shared/SEED.md (claims, not facts); "derived" figures are
computed from them as stated; "assumption" figures are ours, chosen to be plausible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from protocol.base import HardwareGeneration
from protocol.power import HARDWARE_POWER, HardwarePower

Hardware = HardwarePower
"""One self-driving computer generation; its figures and sources live in `protocol.power`, the one model."""

HARDWARE: dict[HardwareGeneration, Hardware] = HARDWARE_POWER


@dataclass(frozen=True, slots=True)
class CarModel:
    """A car model: usable battery and driving consumption."""

    name: str
    battery_kwh: float
    kwh_per_km: float
    share: float  # of the emulated fleet


CAR_MODELS: tuple[CarModel, ...] = (
    # Usable capacities and consumption: approximate public figures (manufacturer sheets and
    # EPA ratings, rounded); shares are an assumption.
    CarModel("model-3-rwd", 57.5, 0.14, 0.25),
    CarModel("model-3-lr", 75.0, 0.15, 0.20),
    CarModel("model-y-lr", 75.0, 0.16, 0.35),
    CarModel("model-s", 95.0, 0.18, 0.10),
    CarModel("cybertruck", 123.0, 0.26, 0.10),
)

DEFAULT_HARDWARE_MIX: dict[HardwareGeneration, float] = {
    HardwareGeneration.HW3: 0.1,
    HardwareGeneration.HW4: 0.5,
    HardwareGeneration.HW5: 0.3,
    HardwareGeneration.HW6: 0.1,
}
"""Assumption: the mix of a fleet a few years into HW5 deliveries."""

HOME_CHARGER_KW = 7.4  # assumption: a 32 A single-phase wall box
WORK_CHARGER_KW = 7.4
FAST_CHARGER_KW = 120.0  # assumption: an average Supercharger session's power
ELECTRICITY_PRICE_PER_KWH = 0.15  # USD, assumption: a typical residential tariff
CURRENCY = "USD"


class MixError(ValueError):
    """A hardware mix that cannot be used; the message is one line for the user."""


def parse_hardware_mix(text: str) -> dict[HardwareGeneration, float]:
    """Parse `HW3=0.1,HW4=0.5,...` into normalised shares."""
    mix: dict[HardwareGeneration, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        try:
            generation = HardwareGeneration(name.strip().upper())
            share = float(value)
        except ValueError:
            raise MixError(f"bad hardware mix entry {part.strip()!r}: expected HWn=SHARE") from None
        if not sep or share < 0 or share != share:
            raise MixError(f"bad hardware mix entry {part.strip()!r}: expected HWn=SHARE >= 0")
        mix[generation] = mix.get(generation, 0.0) + share
    return normalise_mix(mix)


def normalise_mix(mix: dict[HardwareGeneration, float]) -> dict[HardwareGeneration, float]:
    """Scale shares so they sum to one; raise `MixError` if they sum to zero."""
    total = sum(mix.values())
    if total <= 0:
        raise MixError("the hardware mix has no positive share")
    return {generation: share / total for generation, share in mix.items() if share > 0}


T = TypeVar("T")


def pick_by_share(shares: list[tuple[float, T]], u: float) -> T:
    """The item whose cumulative share first exceeds `u` in [0, 1) (shares sum to one)."""
    acc = 0.0
    for share, item in shares:
        acc += share
        if u < acc:
            return item
    return shares[-1][1]
