"""One model of compute power and pack heat per hardware generation, read by the cars and by the dispatcher.

The emulated cars integrate their battery and pack temperature with these figures, and the
dispatcher's energy-aware policy plans with the same ones, so a shard the policy places is one
the car's model can finish. Figures marked "essay" are claims (../shared/SEED.md), "derived"
are computed from them as stated, "assumption" are ours, chosen to be plausible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from protocol.base import HardwareGeneration
from protocol.vehicle_messages import HARDWARE_TOPS

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class HardwarePower:
    """One self-driving computer generation: its peak int8 rating and its power draw at full load."""

    generation: HardwareGeneration
    tops: float
    compute_power_kw: float
    tops_source: str
    power_source: str

    @property
    def watts_per_tops(self) -> float:
        """Full-load watts per TOPS: lower is more efficient."""
        return 1000.0 * self.compute_power_kw / self.tops

    @property
    def kwh_per_tera_op(self) -> float:
        """Energy per tera-operation, whatever share of the computer a shard uses (power scales with TOPS)."""
        return self.compute_power_kw / self.tops / 3600.0


# HW4's efficiency (TOPS per kW) anchors the HW5 and HW6 power figures below.
_HW4_TOPS = HARDWARE_TOPS[HardwareGeneration.HW4]
_HW4_POWER_KW = 0.16
_HW5_TOPS = HARDWARE_TOPS[HardwareGeneration.HW5]
_HW6_TOPS = HARDWARE_TOPS[HardwareGeneration.HW6]
_HW5_POWER_KW = round(_HW5_TOPS / (2.5 * _HW4_TOPS / _HW4_POWER_KW), 3)
_HW6_POWER_KW = round(_HW6_TOPS / (2.0 * _HW5_TOPS / _HW5_POWER_KW), 3)

HARDWARE_POWER: dict[HardwareGeneration, HardwarePower] = {
    HardwareGeneration.HW3: HardwarePower(
        HardwareGeneration.HW3, HARDWARE_TOPS[HardwareGeneration.HW3], 0.072,
        "public figure quoted in SEED.md: about 144 TOPS (two chips)",
        "assumption: about 72 W, the figure Tesla gave for the HW3 board in 2019",
    ),
    HardwareGeneration.HW4: HardwarePower(
        HardwareGeneration.HW4, _HW4_TOPS, _HW4_POWER_KW,
        "derived assumption: the essay says HW5 is 40x HW4, so 5,000 / 40 = 125 TOPS "
        "(below public estimates for HW4; kept because the scenario is the essay's)",
        "assumption: 160 W at full load",
    ),
    HardwareGeneration.HW5: HardwarePower(
        HardwareGeneration.HW5, _HW5_TOPS, _HW5_POWER_KW,
        "essay: about 5,000 TOPS, expected end of 2026",
        "derived: the essay's 2-3x power efficiency over HW4, taken as 2.5x",
    ),
    HardwareGeneration.HW6: HardwarePower(
        HardwareGeneration.HW6, _HW6_TOPS, _HW6_POWER_KW,
        "essay: 'tens of thousands of TOPS?', assumed 20,000 TOPS",
        "assumption: twice HW5's efficiency",
    ),
}

# Pack heat: a first-order model, the pack relaxing towards ambient plus the heat of what runs.
PACK_HEAT_C_PER_KW = 6.0  # assumption: steady-state pack heating per kW of compute
PACK_TAU_S = 1800.0  # assumption: thermal time constant of the pack
CHARGING_HEAT_C = 4.0  # assumption: steady-state heating while a charger delivers power
DRIVING_HEAT_C = 8.0  # assumption: steady-state heating while driving
HOT_STOP_C = 45.0  # stop computing at this pack temperature ...
HOT_RESUME_C = 40.0  # ... and resume only below this one (hysteresis)
AMBIENT_MEAN_C, AMBIENT_SWING_C, AMBIENT_PEAK_HOUR = 14.0, 8.0, 15.0  # assumption: a mild spring day
PLAN_STEP_S = 300.0  # the planner integrates the pack in steps this long
PLAN_HORIZON_S = 2 * DAY_S  # beyond this a run counts as heat-unlimited


def ambient_c(local_s: float) -> float:
    """Outside temperature at local time `local_s` (only the time of day counts): 6 °C at 03:00, 22 °C at 15:00."""
    phase = (local_s % DAY_S) / DAY_S - (AMBIENT_PEAK_HOUR - 6.0) / 24.0
    return AMBIENT_MEAN_C + AMBIENT_SWING_C * math.sin(2 * math.pi * phase)


def local_seconds(local: datetime) -> float:
    """Seconds since local midnight of an aware time, in its own zone (the time of day the ambient follows)."""
    return local.hour * 3600.0 + local.minute * 60.0 + local.second + local.microsecond / 1e6


def compute_kw(generation: HardwareGeneration, tops: float) -> float:
    """Power drawn when `tops` of a `generation` computer run (power scales with the TOPS in use)."""
    hardware = HARDWARE_POWER[generation]
    return hardware.compute_power_kw * min(tops, hardware.tops) / hardware.tops


def shard_energy_kwh(generation: HardwareGeneration, work_tera_ops: float) -> float:
    """Energy a car of `generation` takes to do `work_tera_ops`."""
    return work_tera_ops * HARDWARE_POWER[generation].kwh_per_tera_op


def pack_target_c(ambient: float, compute_kw_now: float, *, charging: bool = False, driving: bool = False) -> float:
    """The temperature the pack tends to: ambient plus the heat of compute, charging or driving."""
    if driving:
        return ambient + DRIVING_HEAT_C
    return ambient + PACK_HEAT_C_PER_KW * compute_kw_now + (CHARGING_HEAT_C if charging else 0.0)


def pack_temp_after(pack_c: float, target_c: float, seconds: float) -> float:
    """The pack temperature `seconds` later, relaxing towards `target_c`."""
    return target_c + (pack_c - target_c) * math.exp(-seconds / PACK_TAU_S)


def seconds_until_too_hot(
    pack_c: float, local_s: float, kw: float, *, charging: bool = False, horizon_s: float = PLAN_HORIZON_S,
) -> float:
    """How long a car can compute at `kw` from local time `local_s` before its pack reaches HOT_STOP_C.

    The ambient follows the day's curve; `math.inf` if the pack stays below the limit for
    `horizon_s` (at most PLAN_HORIZON_S).
    """
    if max(pack_c, pack_target_c(AMBIENT_MEAN_C + AMBIENT_SWING_C, kw, charging=charging)) < HOT_STOP_C:
        return math.inf  # not even the hottest hour of the day brings this pack to the limit
    elapsed = 0.0
    while elapsed < min(horizon_s, PLAN_HORIZON_S):
        target = pack_target_c(ambient_c(local_s + elapsed), kw, charging=charging)
        after = pack_temp_after(pack_c, target, PLAN_STEP_S)
        if after >= HOT_STOP_C:
            if target <= pack_c:
                return elapsed
            return elapsed + PACK_TAU_S * math.log((target - pack_c) / (target - HOT_STOP_C))
        pack_c, elapsed = after, elapsed + PLAN_STEP_S
    return math.inf


def shard_refusal(
    generation: HardwareGeneration, tops: float, work_tera_ops: float, *, energy_budget_kwh: float,
    pack_c: float, local_s: float, charging: bool = False,
) -> str | None:
    """Why a car could not finish a shard in one go under this model (battery or heat), or None if it could."""
    if shard_energy_kwh(generation, work_tera_ops) > energy_budget_kwh:
        return "energy budget covers the shard"
    run_s = work_tera_ops / max(tops, 1e-9)
    kw = compute_kw(generation, tops)
    if seconds_until_too_hot(pack_c, local_s, kw, charging=charging, horizon_s=run_s) < run_s:
        return "pack stays below its heat limit for the shard"
    return None


def format_power_kw(kw: float) -> str:
    """A power with a readable unit: 850 W, 2.6 kW, 4.1 MW, 2.56 GW."""
    for scale, unit in ((1e6, "GW"), (1e3, "MW"), (1.0, "kW")):
        if kw >= scale:
            return f"{kw / scale:,.{2 if kw / scale < 10 else 1}f} {unit}"
    return f"{kw * 1000:,.0f} W"


def format_energy_kwh(kwh: float) -> str:
    """An energy with a readable unit: 12.3 kWh, 4.5 MWh, 2.6 GWh."""
    for scale, unit in ((1e6, "GWh"), (1e3, "MWh")):
        if kwh >= scale:
            return f"{kwh / scale:,.1f} {unit}"
    return f"{kwh:,.1f} kWh"
