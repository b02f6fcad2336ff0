"""The power and hours screen: text from the summary only, bars that never wrap, and a snapshot at a fixed size."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from textual.widgets import TabbedContent

from mqttlink import BrokerUrl
from protocol import FleetSummary, Topics, encode, hours
from protocol.clock import ManualClock
from tests.support import control_room as cr
from tui.app import FleetroomApp
from tui.power import PowerScreen, bar, hours_lines, power_lines
from tui.store import FleetStore

SIZE = (150, 44)
TOPICS = Topics("hoursnap")
LOCAL_1PM_TUESDAY = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)


def essay_summary() -> FleetSummary:
    """The essay's million HW5 cars, some computing, with the power and hours fields as the dispatcher fills them."""
    base = cr.summary(1_000_000, busy=400_000, scale="essay: 1,000,000 HW5 cars").model_dump()
    base.update(
        compute_power_kw=400_000 * 2.56, compute_power_from_grid_kw=150_000 * 2.56, rated_power_kw=1_000_000 * 2.56,
        energy_from_battery_kwh=1.2e6, energy_from_grid_kwh=8.0e5, parked_share=0.962,
        parked_share_week_model=hours.parked_share_week(),
        parked_share_by_weekday_model=hours.parked_share_by_weekday(),
        tops_forecast_24h=hours.forecast_tops(LOCAL_1PM_TUESDAY, base["tops_total"]), forecast_start_hour=13,
    )
    return FleetSummary.model_validate_json(FleetSummary.model_validate(base).model_dump_json())


def test_power_panel_labels_claim_model_and_references() -> None:
    text = "\n".join(power_lines(essay_summary()))
    assert "computing cars draw    1.02 GW" in text
    assert "fleet at full load     2.56 GW  (every online car)" in text
    assert "claim  100 GW:" in text and "0.03 x the claim" in text
    assert "essay  Fugaku 29.0 MW: the fleet at full load = 88.28 Fugakus of power" in text
    assert "essay  Frontier 21.0 MW" in text
    assert "1.2 GWh" in text and "800.0 MWh" in text
    assert power_lines(None)[-1].startswith("waiting")


def test_hours_view_is_the_summarys_forecast_with_a_what_if() -> None:
    summary = essay_summary()
    lines = hours_lines(summary, fleet_factor=10)
    rows = [line for line in lines if line[:2].isdigit() and line[2] == ":"]
    assert [row[:5] for row in rows] == [f"{(13 + i) % 24:02d}:00" for i in range(24)]
    fewest = [row for row in rows if row.endswith("<- fewest")]
    assert len(fewest) == 1 and fewest[0].startswith(("07:00", "16:00", "17:00"))
    assert "5.0 GTOPS" in rows[13] and "50.0 GTOPS" in rows[13]  # 02:00: every car parked; x10 in the what-if
    assert max(len(line) for line in rows) <= SIZE[0] - 58 - 4, "a bar row would wrap in the hours column"


def test_bars_are_fixed_width_in_eighths() -> None:
    assert bar(1.0, 1.0, 8) == "█" * 8
    assert bar(0.0, 1.0, 8) == " " * 8
    assert bar(0.5 + 1 / 16, 1.0, 8) == "████▌   "
    assert len({len(bar(v / 7, 1.0)) for v in range(8)}) == 1


def test_snapshot_power_and_hours(snap_compare: Any) -> None:
    clock = ManualClock(1000.0)
    store = FleetStore(TOPICS)
    store.ingest(TOPICS.summary, encode(essay_summary()))
    store.tick(clock())
    store.link_changed("connected")
    app = FleetroomApp(BrokerUrl("127.0.0.1", 1883, "operator"), TOPICS, store=store, clock=clock, connect=False)
    assert snap_compare(app, press=["w"], terminal_size=SIZE)


async def test_a_tab_key_on_the_power_screen_leaves_it_for_that_tab() -> None:
    """The footer offers n, j, h and e on every screen: pressed over a pushed screen they go to that tab."""
    store = FleetStore(TOPICS)
    app = FleetroomApp(BrokerUrl("127.0.0.1", 1883, "operator"), TOPICS, store=store, connect=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        assert isinstance(app.screen, PowerScreen)
        await pilot.press("h")
        assert not isinstance(app.screen, PowerScreen)
        assert app.query_one(TabbedContent).active == "history"
