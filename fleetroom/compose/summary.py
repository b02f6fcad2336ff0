"""The headless demo's closing summary: the dispatcher's FleetSummary in words, with the essay's
equivalences and, next to them, the plain note that int8 TOPS are not FP64 FLOPS (a pure core).
"""

from __future__ import annotations

from collections.abc import Mapping

from protocol import FleetSummary, HardwareGeneration
from protocol.fleet_messages import money_text, utilisation
from protocol.reference import INT8_VS_FP64_NOTE, equivalence_text, format_tops
from protocol.vehicle_messages import HARDWARE_TOPS

EssayFleet = tuple[int, Mapping[HardwareGeneration, float]]  # (cars emulated, hardware mix)


def _counts(counts: Mapping[str, int | float]) -> str:
    return ", ".join(f"{name} {value:,.0f}" for name, value in sorted(counts.items()) if value) or "none"


ESSAY_CARS = 1_000_000
ESSAY_TOPS_PER_CAR = HARDWARE_TOPS[HardwareGeneration.HW5]  # 5,000: HW5 as the essay states it (SEED.md)
ESSAY_EMULATED = 2_000  # cars the essay demo really emulates by default; each stands for 500


def essay_target_line(emulated: int, mix: Mapping[HardwareGeneration, float] | None = None) -> str:
    """The essay's arithmetic for a million cars of `mix` (HW5 by default), and how many are emulated."""
    mix = mix or {HardwareGeneration.HW5: 1.0}
    per_car = sum(HARDWARE_TOPS[hw] * share for hw, share in mix.items()) / (sum(mix.values()) or 1.0)
    total = ESSAY_CARS * per_car
    names = " + ".join(f"{share:.0%} {hw.value}" for hw, share in mix.items())
    names = next(iter(mix)).value if len(mix) == 1 else names
    stand_for = ESSAY_CARS // emulated
    how = "every car emulated" if stand_for == 1 else f"{emulated:,} cars emulated, each standing for {stand_for:,}"
    return (
        f"  the essay's scale: {ESSAY_CARS:,} {names} cars x {per_car:,.0f} TOPS = {format_tops(total)} = "
        f"{equivalence_text(total)} (peak); {how}"
    )


def format_summary(
    summary: FleetSummary | None, seen: Mapping[str, int], duration_s: float, *, essay: EssayFleet | None = None,
    telemetry_sample: int = 0,
) -> str:
    """The summary as lines of text; `seen` counts the message kinds the demo's observer received.

    `essay`, when given, is how many cars the essay demo really emulates and their hardware mix;
    `telemetry_sample`, when not 0, is how many cars' telemetry the observer took."""
    offers = seen.get("offer", 0)
    assignments = seen.get("shard_assign", 0)
    results = seen.get("shard_result", 0)
    lines = [f"fleetroom demo: {duration_s:.0f} s of wall time"]
    if summary is None:
        lines.append("  no FleetSummary from the dispatcher was received")
    else:
        lines += _fleet_lines(summary)
    lines += [
        f"  seen on the wire: {offers:,} offers, {assignments:,} assignments, {results:,} shard results, "
        f"{seen.get('shard_preempted', 0):,} preemptions, {seen.get('telemetry', 0):,} telemetry messages"
        + (f" (of {telemetry_sample:,} cars sampled)" if telemetry_sample else ""),
    ]
    if essay:
        lines.append(essay_target_line(*essay))
    return "\n".join(lines)


def faults_line(s: FleetSummary) -> str:
    """What the dispatcher detected of the faults a fleet may inject."""
    detected = {"wrong results caught": s.wrong_results_caught, **{k.replace("_", " "): v
                                                                   for k, v in s.faults_detected.items()}}
    return "  faults detected: " + "; ".join(f"{name} {n:,}" for name, n in detected.items())


def _fleet_lines(s: FleetSummary) -> list[str]:
    scale = f" ({s.scenario_scale})" if s.scenario_scale else ""
    unscaled = " (emulated cars, unscaled)" if s.scenario_scale else ""
    return [
        f"  cars: {s.cars_known:,} known{scale}; by state: {_counts(s.cars_by_state)}",
        f"  hardware: {_counts(s.cars_by_hardware)}",
        f"  compute: {format_tops(s.tops_total)} total, {format_tops(s.tops_offered)} offered, "
        f"{format_tops(s.tops_allocated)} allocated: {utilisation(s):.0%} of what the parked cars offer in use",
        f"  as the essay counts it: {equivalence_text(s.tops_total)} (peak); "
        f"in use: {equivalence_text(s.tops_allocated)}",
        f"  note: {INT8_VS_FP64_NOTE}",
        f"  jobs: {_counts(s.jobs_by_status)}; shards completed: {s.shards_completed:,}; "
        f"work done: {s.work_done_tera_ops:,.0f} tera-ops; throughput {format_tops(s.throughput_tops)}{unscaled}",
        f"  preemptions: {s.preemptions:,} ({s.redone_tera_ops:,.0f} tera-ops redone); "
        f"messages rejected: {s.messages_rejected:,}",
        faults_line(s),
        f"  earnings: {money_text(s)}; energy {s.energy_kwh:,.2f} kWh; policy {s.policy.value}; "
        f"{s.messages_per_s:,.0f} messages/s at the dispatcher",
    ]
