"""Snapshots of the control room at 160x48, the size a presenter uses: nothing may be cut off.

The header (TOPS in use, fractional Fugakus, faults detected), the health bar in read-only mode
after a reconnect, the history charts, the car view's reliability, the cancel confirmation and a
refused submit form that keeps what was typed. Same scripted store as tests/test_tui_snapshots.py.
"""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from mqttlink import BrokerUrl
from protocol import Topics, encode
from protocol.clock import ManualClock
from tests.support import control_room as cr
from tests.test_tui_snapshots import TOPICS, scripted_store
from tui.app import FleetroomApp
from tui.store import FleetStore

SIZE = (160, 48)


def story_store(clock: ManualClock) -> FleetStore:
    """The scripted fleet, plus a small fleet's summary with detected faults, a reconnect and a reliability."""
    store = scripted_store(clock)
    store.ingest(TOPICS.commands("car-05"), encode(cr.assignment("car-05", "job-a", 5).model_copy(
        update={"car_reliability": 0.875})))
    small = cr.summary(100, "HW4", busy=60, running=1, queued=1).model_copy(update={
        "faults_detected": {"shards_lost_car_silent": 3, "cars_timed_out": 2}, "tops_allocated": 9_000.0,
        "tops_offered": 3_500.0})
    store.ingest(TOPICS.summary, encode(small))
    store.tick(clock())
    store.link_changed("reconnecting", "connection refused", 1)
    store.link_changed("connected")
    return store


def control_room(*, read_only: bool = False) -> FleetroomApp:
    clock = ManualClock(1000.0)
    return FleetroomApp(BrokerUrl("127.0.0.1", 1883, "observer" if read_only else "operator"), Topics("snap"),
                        store=story_store(clock), clock=clock, connect=False, read_only=read_only,
                        title="fleetroom demo: the essay's scale")


def test_snapshot_160_header_read_only_reconnected(snap_compare: Any) -> None:
    """READ-ONLY and 'reconnected 1x' lead the health bar; 100 HW4 cars read 0.02 Fugaku, faults counted."""
    assert snap_compare(control_room(read_only=True), terminal_size=SIZE)


def test_snapshot_160_history_charts(snap_compare: Any) -> None:
    assert snap_compare(control_room(), press=["h"], terminal_size=SIZE)


def test_snapshot_160_car_view_with_reliability(snap_compare: Any) -> None:
    assert snap_compare(control_room(), press=["down"] * 5 + ["enter"], terminal_size=SIZE)


def test_snapshot_160_cancel_asks_to_confirm(snap_compare: Any) -> None:
    assert snap_compare(control_room(), press=["j", "enter", "c"], terminal_size=SIZE)


def test_snapshot_160_refused_form_keeps_what_was_typed(snap_compare: Any) -> None:
    async def type_and_submit(pilot: Pilot[None]) -> None:
        await pilot.press("ctrl+n")
        pilot.app.screen.query_one("#form-name", Input).value = "my render job"
        pilot.app.screen.query_one("#form-shards", Input).value = "7"
        await pilot.click("#form-submit")  # not connected: refused, and the form opens again as it was
        await pilot.pause()

    assert snap_compare(control_room(), run_before=type_and_submit, terminal_size=SIZE)
