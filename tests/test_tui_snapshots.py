"""Deterministic snapshots of the control room at a fixed terminal size.

The store is fed real encoded protocol messages through `ingest` (the worker's own path), the
clock is frozen, and the app does not connect, so every screenshot is the same on every run.
"""

from __future__ import annotations

from typing import Any

from mqttlink import BrokerUrl
from protocol import ComputeState, Gear, JobStatus, Liveness, SuspendReason, Topics, encode
from protocol.clock import ManualClock
from tests.support import control_room as cr
from tui.app import FleetroomApp
from tui.store import FleetStore

SIZE = (150, 44)
TOPICS = Topics("snap")


def scripted_store(clock: ManualClock) -> FleetStore:
    """A small fleet in every state, two jobs, three history samples and a rejected message."""
    store = FleetStore(TOPICS)
    t = TOPICS
    states = [ComputeState.IDLE, ComputeState.BUSY, ComputeState.SUSPENDED, ComputeState.VACATING]
    for i in range(16):
        vid = f"car-{i:02d}"
        hw = ("HW5", "HW6", "HW4", "HW3")[i % 4]
        store.ingest(t.vehicle_status(vid), encode(cr.status(vid, hardware=hw)))
        state = states[i % 4]
        store.ingest(t.telemetry(vid), encode(cr.telemetry(
            vid, state, hardware=hw, soc=0.3 + i * 0.04, in_use=cr.RATED[hw] / 2 if state is ComputeState.BUSY else 0,
            shard=f"asg-job-a-{i}" if state is ComputeState.BUSY else None, earned=i * 0.37,
            reason=SuspendReason.LOW_CHARGE if state is ComputeState.SUSPENDED else None)))
    store.ingest(t.telemetry("car-16"), encode(cr.telemetry("car-16", gear=Gear.DRIVE)))
    store.ingest(t.vehicle_status("car-17"), encode(cr.status("car-17", Liveness.OFFLINE)))
    store.ingest(t.vehicle_status("car-18"), encode(cr.status("car-18", Liveness.ASLEEP)))
    store.ingest(t.job_state("job-a"), encode(cr.job_state("job-a", JobStatus.RUNNING, 0.62)))
    store.ingest(t.job_state("job-b"), encode(cr.job_state("job-b", JobStatus.QUEUED, 0.0)))
    store.ingest(t.commands("car-01"), encode(cr.assignment("car-01", "job-a", 1)))
    store.ingest(t.shards("car-01"), encode(cr.progress("car-01", "job-a", 1, done=7e5)))
    store.ingest(t.telemetry("car-01"), b"not json")
    for cars in (250_000, 600_000, 1_000_000):
        store.ingest(t.summary, encode(cr.summary(cars, busy=cars // 10, running=1, queued=1,
                                                  scale="essay: 1,000,000 HW5 cars")))
        store.tick(clock())
        clock.advance(1.0)
    store.link_changed("connected")
    return store


def control_room() -> FleetroomApp:
    clock = ManualClock(1000.0)
    return FleetroomApp(BrokerUrl("127.0.0.1", 1883, "operator"), TOPICS, store=scripted_store(clock),
                        clock=clock, connect=False)


def test_snapshot_node_view(snap_compare: Any) -> None:
    """Header with the essay's equivalences, health bar, state strip and the node table."""
    assert snap_compare(control_room(), terminal_size=SIZE)


def test_snapshot_node_view_sorted_and_filtered(snap_compare: Any) -> None:
    """Sorted by state of charge, descending, and filtered to HW6 cars."""
    assert snap_compare(control_room(), press=["4", "4", "slash", "H", "W", "6", "enter"], terminal_size=SIZE)


def test_snapshot_job_view(snap_compare: Any) -> None:
    assert snap_compare(control_room(), press=["j"], terminal_size=SIZE)


def test_snapshot_job_drill_down(snap_compare: Any) -> None:
    assert snap_compare(control_room(), press=["j", "enter"], terminal_size=SIZE)


def test_snapshot_car_drill_down(snap_compare: Any) -> None:
    assert snap_compare(control_room(), press=["down", "enter"], terminal_size=SIZE)


def test_snapshot_history(snap_compare: Any) -> None:
    assert snap_compare(control_room(), press=["h"], terminal_size=SIZE)
