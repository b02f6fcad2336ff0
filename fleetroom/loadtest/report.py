"""The load-test report: one dict, written as JSON, Markdown, and an SVG latency-over-time chart."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from fleetroom.loadtest.ledger import RunLedger
from fleetroom.loadtest.metrics import LatencyPoint
from fleetroom.loadtest.slo import Verdict
from protocol.reference import equivalence_text, format_tops


@dataclass(frozen=True)
class StageRecord:
    """A stage as it ran: when it started and ended (seconds into the run), and what it did."""

    kind: str
    label: str
    start_s: float
    end_s: float
    note: str = ""


def build_report(
    meta: dict[str, Any], ledger: RunLedger, stages: Sequence[StageRecord], duration_s: float
) -> dict[str, Any]:
    """The run's figures as plain data (the JSON report)."""
    summary = ledger.last_summary
    outcome = ledger.outcome()
    return {
        **meta,
        "duration_s": round(duration_s, 3),
        "messages_per_s": round(ledger.counters.receives / duration_s, 2) if duration_s > 0 else 0.0,
        "counters": ledger.counters.as_dict(),
        "latency": ledger.latency.stats().as_dict(),
        "assignment_latency": ledger.assignment_latency.stats().as_dict(),
        "probe_latency": ledger.probe_latency.stats().as_dict(),
        "jobs": {**outcome.as_dict(), "assigned": len(ledger.first_assignment),
                 "resubmitted": ledger.resubmissions, "lost_job_ids": ledger.lost_jobs()[:100]},
        "fleet": {
            "cars_seen": len(ledger.car_online),
            "cars_online_at_end": ledger.cars_online(),
            "shards_completed": summary.shards_completed if summary else ledger.counters.by_kind.get("shard_result", 0),
            "messages_rejected_by_dispatcher": ledger.max_messages_rejected,
            "tops_total_at_end": summary.tops_total if summary else 0.0,
        },
        "stack": {"peak_rss_mib": round(ledger.stack_peak_rss_bytes / 2**20, 1)},
        "stages": [s.__dict__ for s in stages],
        "latency_series": [p.__dict__ for p in ledger.latency.series()],
    }


def render_markdown(report: dict[str, Any], verdicts: Sequence[Verdict], chart_name: str) -> str:
    """The report for people: headline figures, stages, objectives and the chart."""
    lat, asg, jobs, fleet = report["latency"], report["assignment_latency"], report["jobs"], report["fleet"]
    c = report["counters"]
    lines = [
        f"# Load test: {report['scenario']}",
        "",
        f"{report.get('description', '')}".strip(),
        "",
        f"- broker: {report['broker']}; fleet processes: {report['fleet_processes']}; "
        f"speed {report['speed']}x; duration {report['duration_s']:.1f} s",
        f"- messages received: {c['receives']:,} ({report['messages_per_s']:,.1f}/s); harness publishes "
        f"{c['publishes']:,}; connects {c['connects']:,}; reconnects {c['reconnects']:,}; failures "
        f"{c['failures']:,}; undecodable {c['rejected']:,}; rejected by the dispatcher "
        f"{fleet['messages_rejected_by_dispatcher']:,}"
        + (f"; **dropped by the observer {c['observer_dropped']:,}** (it fell behind: the figures miss them)"
           if c.get("observer_dropped") else ""),
        "",
        "| latency (ms) | count | p50 | p95 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        _latency_row("end to end (sent_at to observer)", lat),
        _latency_row("assignment (submission to first ShardAssignment)", asg),
        _latency_row("observer's probe to itself (the harness's floor)", report["probe_latency"]),
        "",
        "| jobs | submitted | completed | unfinished | rejected | lost | preemptions | redone tera-ops "
        "| wrong results caught |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| | {jobs['submitted']} | {jobs['completed']} | {jobs['unfinished']} | {jobs['rejected']} | "
        f"{jobs['lost']} | {jobs['preemptions']} | {jobs['redone_tera_ops']:,.0f} | {jobs['wrong_results_caught']} |",
        "",
        f"Jobs sent again because the dispatcher had not answered within 5 s: {jobs['resubmitted']}.",
        "",
        f"Cars seen: {fleet['cars_seen']:,}; online at the end: {fleet['cars_online_at_end']:,}; "
        f"shards completed: {fleet['shards_completed']:,}; state changes taken from gateway rosters: "
        f"{c.get('state_changes', 0):,}; offer frames missed: {c.get('frames_missed', 0):,}.",
        "",
        f"Peak resident memory of the whole stack (broker, dispatcher, fleets, observer; sampled each second "
        f"from /proc): {report.get('stack', {}).get('peak_rss_mib', 0.0):,.1f} MiB.",
        "",
        f"Compute online at the end: {format_tops(fleet['tops_total_at_end'])} = "
        f"{equivalence_text(fleet['tops_total_at_end'])} (peak int8 TOPS as the essay counts them: a claim).",
        "",
        "## Stages",
        "",
        "| # | stage | from (s) | to (s) | what happened |",
        "| ---: | --- | ---: | ---: | --- |",
        *[
            f"| {i} | {s['label']} | {s['start_s']:.1f} | {s['end_s']:.1f} | {s['note']} |"
            for i, s in enumerate(report["stages"], 1)
        ],
        "",
        "## Objectives",
        "",
        *([f"- {v.line()}" for v in verdicts] or ["- (none in the scenario)"]),
        "",
        "## End-to-end latency over time",
        "",
        f"![latency over time]({chart_name})",
        "",
    ]
    return "\n".join(lines)


def _latency_row(name: str, stats: dict[str, float]) -> str:
    return (
        f"| {name} | {int(stats['count']):,} | {stats['p50_ms']:,.1f} | {stats['p95_ms']:,.1f} | "
        f"{stats['p99_ms']:,.1f} | {stats['max_ms']:,.1f} |"
    )


@dataclass(frozen=True)
class _Frame:
    """The chart's plot area and scales: seconds to x, milliseconds to y."""

    width: int
    height: int
    end_s: float
    peak_ms: float
    left: int = 60
    right: int = 20
    top: int = 20
    bottom: int = 40

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom

    def x(self, t: float) -> float:
        return self.left + self.plot_w * t / self.end_s

    def y(self, ms: float) -> float:
        return self.top + self.plot_h * (1 - ms / self.peak_ms)


def _svg_stages(f: _Frame, stages: Sequence[StageRecord]) -> list[str]:
    parts = []
    for i, stage in enumerate(stages):
        shade = "#f2f2f2" if i % 2 == 0 else "#e6eef7"
        span = max(0.5, f.x(stage.end_s) - f.x(stage.start_s))
        parts.append(f'<rect x="{f.x(stage.start_s):.1f}" y="{f.top}" width="{span:.1f}" height="{f.plot_h}" '
                     f'fill="{shade}"/>')
        parts.append(f'<text x="{f.x(stage.start_s) + 2:.1f}" y="{f.top + 12 + 12 * (i % 3)}">'
                     f'{escape(stage.label)}</text>')
    return parts


def runs(series: Sequence[LatencyPoint]) -> list[list[LatencyPoint]]:
    """The series cut where seconds are missing, so that a gap in the data is drawn as a gap."""
    out: list[list[LatencyPoint]] = []
    for point in series:
        if out and point.second == out[-1][-1].second + 1:
            out[-1].append(point)
        else:
            out.append([point])
    return out


def _svg_lines(f: _Frame, series: Sequence[LatencyPoint]) -> list[str]:
    parts = []
    for row, (name, colour) in enumerate((("p50", "#1f77b4"), ("p99", "#d62728"))):
        for run in runs(series):
            points = " ".join(f"{f.x(p.second + 0.5):.1f},{f.y(getattr(p, f'{name}_ms')):.1f}" for p in run)
            parts.append(f'<polyline class="{name}" fill="none" stroke="{colour}" stroke-width="1.5" '
                         f'points="{points}"/>')
        parts.append(f'<text x="{f.width - f.right - 60}" y="{f.top + 14 * (row + 1)}" fill="{colour}">{name}</text>')
    return parts


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to about `high`: steps of 1, 2 or 5 times a power of ten."""
    if high <= 0:
        return [0.0]
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(high // step) + 1)]


def _svg_axes(f: _Frame) -> list[str]:
    bottom, middle = f.top + f.plot_h, f.top + f.plot_h / 2
    parts = [
        f'<line x1="{f.left}" y1="{bottom}" x2="{f.left + f.plot_w}" y2="{bottom}" stroke="black"/>',
        f'<line x1="{f.left}" y1="{f.top}" x2="{f.left}" y2="{bottom}" stroke="black"/>',
        f'<text x="12" y="{middle}" transform="rotate(-90 12 {middle})" text-anchor="middle">latency (ms)</text>',
        f'<text x="{f.left + f.plot_w / 2}" y="{f.height - 6}" text-anchor="middle">seconds into the run; '
        f'gaps: seconds with no message</text>',
    ]
    for ms in nice_ticks(f.peak_ms):
        y = f.y(ms)
        parts.append(f'<line class="ytick" x1="{f.left - 4}" y1="{y:.1f}" x2="{f.left}" y2="{y:.1f}" stroke="black"/>')
        parts.append(f'<text x="{f.left - 6}" y="{y + 4:.1f}" text-anchor="end">{ms:,g}</text>')
    for s in nice_ticks(f.end_s, 8):
        x = f.x(s)
        parts.append(f'<line class="xtick" x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="black"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{s:,g}</text>')
    return parts


def render_svg(series: Sequence[LatencyPoint], stages: Sequence[StageRecord], width: int = 800,
               height: int = 300) -> str:
    """A line chart of p50 and p99 latency per second, with the stages shaded and labelled."""
    end_s = max([p.second + 1 for p in series] + [s.end_s for s in stages] + [1.0])
    frame = _Frame(width, height, end_s, max([p.p99_ms for p in series] + [1.0]))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="11">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        *_svg_stages(frame, stages), *_svg_lines(frame, series), *_svg_axes(frame), "</svg>",
    ]
    return "\n".join(parts) + "\n"


def write_report(out_dir: Path, report: dict[str, Any], verdicts: Sequence[Verdict], ledger: RunLedger,
                 stages: Sequence[StageRecord]) -> list[Path]:
    """Write report.json, report.md and latency.svg into `out_dir`; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {**report, "objectives": [v.__dict__ for v in verdicts],
              "passed": all(v.passed for v in verdicts)}
    paths = [out_dir / "report.json", out_dir / "report.md", out_dir / "latency.svg"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(render_markdown(report, verdicts, paths[2].name))
    paths[2].write_text(render_svg(ledger.latency.series(), stages))
    return paths
