"""Service-level objectives: each scenario objective checked against the run's figures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleetroom.loadtest.scenario import SLO_KEYS


@dataclass(frozen=True)
class Verdict:
    """One objective, the figure measured, and whether it was met."""

    key: str
    what: str
    limit: float
    measured: float
    passed: bool

    def line(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        if self.key not in SLO_KEYS:
            return f"{mark}  {self.what}"
        sign = "<=" if self.key.startswith("max_") else ">="
        return f"{mark}  {self.what}: {self.measured:,.6g} (objective {sign} {self.limit:,.6g})"


def measured_figures(report: Mapping[str, object]) -> dict[str, float]:
    """The figure each objective key is judged on, taken from a run report."""
    jobs = _section(report, "jobs")
    latency = _section(report, "latency")
    assignment = _section(report, "assignment_latency")
    fleet = _section(report, "fleet")
    counters = _section(report, "counters")
    stack = _section(report, "stack")
    return {
        "max_jobs_lost": float(jobs.get("lost", 0)),
        "min_jobs_completed_share": float(jobs.get("completed_share", 0.0)),
        "max_p99_latency_ms": float(latency.get("p99_ms", 0.0)),
        "max_max_latency_ms": float(latency.get("max_ms", 0.0)),
        "max_assignment_p95_ms": float(assignment.get("p95_ms", 0.0)),
        "max_assignment_p99_ms": float(assignment.get("p99_ms", 0.0)),
        "max_stack_rss_mib": float(stack.get("peak_rss_mib", 0.0)),
        "min_messages_per_s": float(_as_float(report.get("messages_per_s", 0.0))),
        "min_wrong_results_caught": float(jobs.get("wrong_results_caught", 0)),
        "min_cars_seen": float(fleet.get("cars_seen", 0)),
        "min_shards_completed": float(fleet.get("shards_completed", 0)),
        "max_observer_dropped": float(counters.get("observer_dropped", 0)),
        "max_frames_missed": float(counters.get("frames_missed", 0)),
    }


def evaluate(objectives: Mapping[str, float], report: Mapping[str, object]) -> list[Verdict]:
    """Judge every objective of the scenario; unknown keys cannot reach here (the parser refuses them)."""
    figures = measured_figures(report)
    verdicts = []
    for key, limit in objectives.items():
        value = figures[key]
        passed = value <= limit if key.startswith("max_") else value >= limit
        verdicts.append(Verdict(key, SLO_KEYS[key], limit, value, passed))
    return verdicts


def _section(report: Mapping[str, object], name: str) -> dict[str, float]:
    value = report.get(name, {})
    if not isinstance(value, dict):
        return {}
    return {k: _as_float(v) for k, v in value.items() if isinstance(v, int | float)}


def _as_float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
