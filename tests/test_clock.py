"""The simulation clock: processes given one origin, speed and epoch agree on simulation time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from protocol.clock import ManualClock, SimClock

ORIGIN = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def test_without_an_epoch_a_clock_starts_at_its_origin_when_built() -> None:
    wall = ManualClock(100.0)
    early = SimClock(60.0, ORIGIN, wall)
    wall.advance(5.0)
    late = SimClock(60.0, ORIGIN, wall)
    assert early.now() == ORIGIN + timedelta(minutes=5) and late.now() == ORIGIN


def test_clocks_sharing_an_epoch_agree_however_late_they_start() -> None:
    wall, unix = ManualClock(100.0), ManualClock(1_800_000_000.0)  # monotonic and Unix seconds
    epoch = unix.t
    first = SimClock(60.0, ORIGIN, wall, epoch=epoch, unix=unix)
    for step in (2.5, 30.0, 0.25):  # a dispatcher restarted after 2.5 s, a fleet after 32.5 s, ...
        wall.advance(step)
        unix.advance(step)
        later = SimClock(60.0, ORIGIN, wall, epoch=epoch, unix=unix)
        assert later.now() == first.now()
    assert first.now() == ORIGIN + timedelta(seconds=32.75 * 60)
