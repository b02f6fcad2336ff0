"""The essay's reference machines and its arithmetic, labelled as claims.

Every part that shows "how big is this datacenter" (the control room, the demo summary, the
load-test report) uses these figures, so that a million HW5 cars read 11,363 Fugakus and
1,820 El Capitans everywhere, exactly as the essay computes (whole machines, rounded down).
"""

from __future__ import annotations

from dataclasses import dataclass

INT8_VS_FP64_NOTE = (
    "Scenario arithmetic from the essay: peak int8 TOPS compared with FP64 FLOPS. "
    "They are not like for like; an HPL EFLOPS is 64-bit floating point."
)


@dataclass(frozen=True, slots=True)
class ReferenceMachine:
    """A machine the essay compares the fleet with; `tops` is its figure taken as TOPS."""

    name: str
    tops: float
    stated_as: str
    power_mw: float | None
    source: str


FUGAKU = ReferenceMachine("Fugaku", 440_000.0, "0.44 EFLOPS", 29.0, "essay, as stated")
FRONTIER = ReferenceMachine("Frontier", 1_200_000.0, "1.2 EFLOPS", 21.0, "essay, as stated")
EL_CAPITAN = ReferenceMachine(
    "El Capitan", 2_746_000.0, "2.746 EFLOPS peak (1.742 HPL)", None, "essay: #1 in June 2025, peak"
)
H100 = ReferenceMachine("H100", 2_000.0, "about 2,000 TOPS int8", 0.0007, "essay, as stated")

REFERENCE_MACHINES: tuple[ReferenceMachine, ...] = (FUGAKU, FRONTIER, EL_CAPITAN)


def machines_equivalent(total_tops: float, machine: ReferenceMachine) -> int:
    """How many whole `machine`s `total_tops` equals, rounded down as the essay does."""
    if total_tops <= 0:
        return 0
    # Round before flooring so 5e9 / 4.4e5 = 11363.63... and exact multiples are not lost to
    # binary floating point (e.g. 2 * 440000 / 440000 must be 2, not 1.9999999).
    return int(round(total_tops / machine.tops, 9) // 1)


def equivalences(total_tops: float) -> dict[str, int]:
    """The fleet's total as whole Fugakus, Frontiers and El Capitans (peak)."""
    return {m.name: machines_equivalent(total_tops, m) for m in REFERENCE_MACHINES}


def machines_fraction(total_tops: float, machine: ReferenceMachine) -> float:
    """How many `machine`s `total_tops` equals, as a fraction (0.14 Fugaku for a small fleet)."""
    return max(0.0, total_tops) / machine.tops


def format_machines(count: float, name: str) -> str:
    """`0.14 Fugaku`, `1.13 Fugakus`, `45.4 Frontiers`, `11,363 Fugakus`: rounded down as the essay does.

    Below 10, two decimals; below 100, one; from 100, whole machines (the essay's own figures)."""
    places = 2 if count < 10 else 1 if count < 100 else 0
    step = 10**places
    shown = int(round(count * step, 6) // 1) / step
    text = f"{shown:,.{places}f}"
    return f"{text} {name}" + ("" if shown <= 1 else "s")


def equivalence_text(total_tops: float, *, separator: str = ", ") -> str:
    """The total as Fugakus, Frontiers and El Capitans (peak), fractional when small."""
    return separator.join(format_machines(machines_fraction(total_tops, m), m.name) for m in REFERENCE_MACHINES)


def format_tops(tops: float) -> str:
    """A TOPS figure with a readable unit: 1.2 k, 5.0 M, 20.0 G TOPS."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if tops >= scale:
            return f"{tops / scale:,.1f} {unit}TOPS"
    return f"{tops:,.0f} TOPS"


FLEET_POWER_CLAIM_GW = 100.0
FLEET_POWER_CLAIM = "essay (claim): millions of cars would aggregate about 100 GW of distributed compute power"
POWER_NOTE = (
    "Claim: the essay's figure, unsourced. Model: the cars' telemetry and protocol.power's assumed watts per "
    "generation. Reference machines: their power as the essay states it."
)


def reference_powers_kw() -> tuple[tuple[str, float], ...]:
    """The reference machines whose power the essay states, as (name, kW)."""
    return tuple((m.name, m.power_mw * 1000.0) for m in (FUGAKU, FRONTIER) if m.power_mw is not None)
