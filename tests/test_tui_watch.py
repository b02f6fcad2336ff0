"""Which cars' telemetry the control room reads: the view, settled, bounded, drilled cars first."""

from __future__ import annotations

from tui.watch import TelemetryWatch, WatchChange


def test_the_view_is_watched_once_it_settles_and_new_cars_come_before_old_ones_go() -> None:
    watch = TelemetryWatch(limit=5, settle_s=0.5)
    watch.want([], ["car-a", "car-b"], now=0.0)
    assert watch.change(0.2) is None  # still scrolling
    first = watch.change(0.6)
    assert first == WatchChange(add=("car-a", "car-b"), remove=())
    watch.applied(first)
    assert watch.change(5.0) is None  # nothing new wanted

    for step, rows in enumerate((["car-x"], ["car-y"], ["car-b", "car-c"])):  # flown past: never subscribed
        watch.want([], rows, now=10.0 + step * 0.1)
    change = watch.change(10.8)
    assert change == WatchChange(add=("car-c",), remove=("car-a",))
    watch.applied(change)
    assert watch.subscribed == {"car-b", "car-c"}


def test_the_cars_drilled_into_come_first_and_the_count_is_bounded() -> None:
    watch = TelemetryWatch(limit=3, settle_s=0.0)
    watch.want(["car-open"], [f"car-{i}" for i in range(10)], now=0.0)
    change = watch.change(0.0)
    assert change is not None and set(change.add) == {"car-open", "car-0", "car-1"}
    watch.applied(change)
    watch.lost()  # a new session has no subscriptions: all wanted ones are made again
    again = watch.change(1.0)
    assert again is not None and set(again.add) == {"car-open", "car-0", "car-1"} and not again.remove
