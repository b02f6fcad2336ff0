"""The power panel and the hours view: what the fleet draws, and when the datacenter is big, from the summary.

Every figure is the dispatcher's FleetSummary (its power and hours fields); this module only
formats them, beside the essay's claim and the reference machines' stated power, each labelled.
The what-if row is the summary's forecast through `protocol.hours.what_if` (linear scaling,
the essay's claim that capacity grows with every car).
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Static

from protocol.fleet_messages import FleetSummary
from protocol.hours import WEEKDAYS, what_if
from protocol.power import format_energy_kwh, format_power_kw
from protocol.reference import FLEET_POWER_CLAIM, FLEET_POWER_CLAIM_GW, POWER_NOTE, format_tops, reference_powers_kw
from tui.store import FleetStore

BAR_WIDTH = 36
EIGHTHS = " ▏▎▍▌▋▊▉█"
FACTORS = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)


def _ratio(value: float, reference: float) -> str:
    """`value / reference` with enough digits to read at any scale."""
    ratio = value / reference if reference > 0 else 0.0
    return f"{ratio:,.2f}" if ratio >= 0.01 else f"{ratio:.2g}"


def power_lines(summary: FleetSummary | None) -> list[str]:
    """The power panel: computing cars and the fleet at full load, battery vs grid, next to claim and references."""
    if summary is None:
        return ["POWER", "", "waiting for the dispatcher's fleet summary…"]
    s = summary
    battery_kw = max(0.0, s.compute_power_kw - s.compute_power_from_grid_kw)
    full = format_power_kw(s.rated_power_kw)
    lines = [
        "POWER  (model: the cars' telemetry, protocol.power)",
        "",
        f"computing cars draw {format_power_kw(s.compute_power_kw):>10}",
        f"  from batteries    {format_power_kw(battery_kw):>10}",
        f"  from the grid     {format_power_kw(s.compute_power_from_grid_kw):>10}  (cars on a charger)",
        f"fleet at full load  {full:>10}  (every online car)",
        "",
        "energy drawn since the dispatcher started",
        f"  from batteries    {format_energy_kwh(s.energy_from_battery_kwh):>10}",
        f"  from the grid     {format_energy_kwh(s.energy_from_grid_kwh):>10}",
        "",
        "COMPARED WITH",
        f"claim  {FLEET_POWER_CLAIM_GW:,.0f} GW: {FLEET_POWER_CLAIM.split(': ', 1)[1]}",
        f"model  {full} at full load = {_ratio(s.rated_power_kw, FLEET_POWER_CLAIM_GW * 1e6)} x the claim",
    ]
    for name, kw in reference_powers_kw():
        lines.append(f"essay  {name} {format_power_kw(kw)}: the fleet at full load = "
                     f"{_ratio(s.rated_power_kw, kw)} {name}s of power")
    if s.scenario_scale:
        lines += ["", f"[{s.scenario_scale}]"]
    return [*lines, "", POWER_NOTE]


def bar(value: float, top: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of `value` against `top`, in eighths of a cell, always `width` cells wide."""
    cells = 0.0 if top <= 0 else max(0.0, min(1.0, value / top)) * width
    full = int(cells)
    part = EIGHTHS[int((cells - full) * 8)] if full < width else ""
    return ("█" * full + part).ljust(width)


def hours_lines(summary: FleetSummary | None, fleet_factor: int = 10) -> list[str]:
    """The hours view: parked share now and over a week, and compute available hour by hour for the next day."""
    if summary is None or not summary.tops_forecast_24h:
        return ["HOURS", "", "waiting for the dispatcher's forecast…"]
    s = summary
    now = "no car online" if s.parked_share is None else f"{s.parked_share:.1%} of online cars"
    week = "" if s.parked_share_week_model is None else f"{s.parked_share_week_model:.1%}"
    days = " ".join(f"{d} {share:.1%}" for d, share in zip(WEEKDAYS, s.parked_share_by_weekday_model, strict=False))
    forecast = s.tops_forecast_24h
    scaled = what_if(forecast, fleet_factor)
    low = min(forecast)
    lines = [
        "HOURS  (the dispatcher's forecast from the owner-day model, protocol.owner_day)",
        "",
        f"parked now: {now}    over a week (model): {week}",
        f"by day (model) {days}",
        "",
        f"next 24 simulated hours: rated TOPS of parked cars (model)   {'what-if x' + f'{fleet_factor:,}':>12}",
    ]
    for i, tops in enumerate(forecast):
        hour = (s.forecast_start_hour + i) % 24
        mark = " <- fewest" if tops == low else ""
        lines.append(f"{hour:02d}:00 {bar(tops, max(forecast))} {format_tops(tops):>12}  "
                     f"{format_tops(scaled[i]):>12}{mark}")
    return [*lines, "", f"what-if: a fleet {fleet_factor:,} times larger, scaled linearly (the essay's claim; "
                        "+ and - change it)"]


class PowerScreen(Screen[None]):
    """The power panel beside the hours view, refreshed from the store's latest summary."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("plus,equals_sign", "grow", "What-if x10"),
        Binding("minus", "shrink", "What-if /10"),
    ]

    def __init__(self, store: FleetStore, fleet_factor: int = 10) -> None:
        super().__init__()
        self.store = store
        self.fleet_factor = fleet_factor

    def compose(self) -> ComposeResult:
        with Horizontal(id="power-grid"):
            yield Static("", id="power-panel", classes="detail", markup=False)
            yield Static("", id="hours-view", classes="detail", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_body()
        self.set_interval(0.5, self.refresh_body)

    def refresh_body(self) -> None:
        self.query_one("#power-panel", Static).update("\n".join(power_lines(self.store.summary)))
        self.query_one("#hours-view", Static).update("\n".join(hours_lines(self.store.summary, self.fleet_factor)))

    def action_grow(self) -> None:
        self.fleet_factor = FACTORS[min(len(FACTORS) - 1, FACTORS.index(self.fleet_factor) + 1)]
        self.refresh_body()

    def action_shrink(self) -> None:
        self.fleet_factor = FACTORS[max(0, FACTORS.index(self.fleet_factor) - 1)]
        self.refresh_body()
