"""What the history charts draw, as plain data: series scaled to a readable unit on a time axis. Pure.

Each chart states its window ("last 120 s"), puts time on the x axis in seconds before now, and
scales its values to one unit for the whole chart (3.5 GTOPS, not 3,507,500,000.0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TOPS_UNITS = ((1e12, "TTOPS"), (1e9, "GTOPS"), (1e6, "MTOPS"), (1e3, "kTOPS"), (1.0, "TOPS"))
COUNT_UNITS = ((1e9, "billion"), (1e6, "million"), (1e3, "thousand"), (1.0, ""))


@dataclass(frozen=True)
class ChartSpec:
    """One history chart: its title, the store series it draws, their unit family."""

    title: str
    series: tuple[str, ...]
    units: tuple[tuple[float, str], ...] = COUNT_UNITS
    noun: str = ""


CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec("TOPS", ("tops_allocated", "tops_offered"), TOPS_UNITS),
    ChartSpec("utilisation", ("utilisation_pct",), ((1.0, "%"),)),
    ChartSpec("jobs", ("jobs_queued", "jobs_running"), COUNT_UNITS),
    ChartSpec("fleet size", ("cars",), COUNT_UNITS, "cars"),
    ChartSpec("earnings (compute + robotaxi)", ("earnings", "earnings_net"), ((1.0, "USD"),)),
    ChartSpec("messages per second", ("msgs_per_s",), COUNT_UNITS, "msg/s"),
)

SERIES_NAMES = {
    "tops_allocated": "in use", "tops_offered": "offered", "jobs_queued": "queued", "jobs_running": "running",
    "utilisation_pct": "in use", "msgs_per_s": "now", "cars": "now", "earnings": "gross", "earnings_net": "net",
}


@dataclass(frozen=True)
class ChartData:
    """A chart ready to draw: x in seconds before now, each series divided by `scale`."""

    title: str
    xs: list[float]
    lines: dict[str, list[float]]
    unit: str
    window_s: float

    @property
    def heading(self) -> str:
        latest = ", ".join(f"{SERIES_NAMES.get(n, n)} {v[-1]:,.3g}" for n, v in self.lines.items() if v)
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.title}{unit}, last {self.window_s:,.0f} s: {latest or 'no samples yet'}"


def pick_unit(peak: float, units: Sequence[tuple[float, str]]) -> tuple[float, str]:
    """The largest unit the peak reaches (the smallest one if none)."""
    for scale, unit in units:
        if abs(peak) >= scale:
            return scale, unit
    return units[-1]


def chart_data(spec: ChartSpec, series: Mapping[str, Sequence[float]], sample_every_s: float) -> ChartData:
    """`spec`'s series from the store's history, scaled to one unit, on a seconds-before-now axis."""
    values = {name: list(series.get(name, ())) for name in spec.series}
    length = max((len(v) for v in values.values()), default=0)
    peak = max((max(v) for v in values.values() if v), default=0.0)
    scale, unit = pick_unit(peak, spec.units)
    unit = " ".join(part for part in (unit, spec.noun) if part)
    xs = [-(length - 1 - i) * sample_every_s for i in range(length)]
    lines = {name: [x / scale for x in v] for name, v in values.items()}
    return ChartData(spec.title, xs, lines, unit, max(length - 1, 0) * sample_every_s)
