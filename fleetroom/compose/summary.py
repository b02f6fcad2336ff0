"""The headless demo's closing summary: the dispatcher's FleetSummary in words, with the essay's
equivalences and, next to them, the plain note that int8 TOPS are not FP64 FLOPS (a pure core).
"""

from __future__ import annotations

from collections.abc import Mapping

from protocol import FleetSummary
from protocol.reference import INT8_VS_FP64_NOTE, REFERENCE_MACHINES, equivalences, format_tops


def _counts(counts: Mapping[str, int | float]) -> str:
    return ", ".join(f"{name} {value:,.0f}" for name, value in sorted(counts.items()) if value) or "none"


ESSAY_CARS = 1_000_000
ESSAY_TOPS_PER_CAR = 5_000.0  # HW5 as the essay states it (../shared/SEED.md)
ESSAY_EMULATED = 2_000  # cars the essay demo really emulates by default; each stands for 500


def essay_target_line(emulated: int) -> str:
    """The essay's arithmetic for a million HW5 cars, and how many of them are really emulated."""
    total = ESSAY_CARS * ESSAY_TOPS_PER_CAR
    equal = equivalences(total)
    machines = ", ".join(f"{equal[m.name]:,} {m.name}s" for m in REFERENCE_MACHINES)
    stand_for = ESSAY_CARS // emulated
    how = "every car emulated" if stand_for == 1 else f"{emulated:,} cars emulated, each standing for {stand_for:,}"
    return (
        f"  the essay's scale: {ESSAY_CARS:,} HW5 cars x {ESSAY_TOPS_PER_CAR:,.0f} TOPS = {format_tops(total)} = "
        f"{machines} (peak); {how}"
    )


def format_summary(
    summary: FleetSummary | None, seen: Mapping[str, int], duration_s: float, *, essay: int = 0
) -> str:
    """The summary as lines of text; `seen` counts the message kinds the demo's observer received.

    `essay`, when not 0, is how many cars the essay demo really emulates."""
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
        f"{seen.get('shard_preempted', 0):,} preemptions, {seen.get('telemetry', 0):,} telemetry messages",
    ]
    if essay:
        lines.append(essay_target_line(essay))
    return "\n".join(lines)


def _fleet_lines(s: FleetSummary) -> list[str]:
    equal = equivalences(s.tops_total)
    machines = ", ".join(f"{equal[m.name]:,} {m.name}{'s' if equal[m.name] != 1 else ''}" for m in REFERENCE_MACHINES)
    scale = f" ({s.scenario_scale})" if s.scenario_scale else ""
    return [
        f"  cars: {s.cars_known:,} known{scale}; by state: {_counts(s.cars_by_state)}",
        f"  hardware: {_counts(s.cars_by_hardware)}",
        f"  compute: {format_tops(s.tops_total)} total, {format_tops(s.tops_offered)} offered, "
        f"{format_tops(s.tops_allocated)} allocated",
        f"  as the essay counts it: {machines} (peak)",
        f"  note: {INT8_VS_FP64_NOTE}",
        f"  jobs: {_counts(s.jobs_by_status)}; shards completed: {s.shards_completed:,}; "
        f"work done: {s.work_done_tera_ops:,.0f} tera-ops",
        f"  preemptions: {s.preemptions:,} ({s.redone_tera_ops:,.0f} tera-ops redone); "
        f"wrong results caught: {s.wrong_results_caught:,}; messages rejected: {s.messages_rejected:,}",
        f"  earnings: {s.earnings_gross:,.2f} {s.currency} gross; energy {s.energy_kwh:,.2f} kWh "
        f"costing {s.energy_cost:,.2f} {s.currency}; policy {s.policy.value}; "
        f"{s.messages_per_s:,.0f} messages/s at the dispatcher",
    ]
