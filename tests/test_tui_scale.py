"""The control room at scale: 200,000 cars learned from rosters, on Mosquitto, driven by Textual's pilot."""

from __future__ import annotations

import asyncio
import gc
import random
from pathlib import Path

from textual.widgets import Static

from dispatcher.views import scale_label
from mqttlink import Backoff, BrokerUrl
from protocol import Topics, encode
from tests.support import control_room as cr
from tests.support.brokers import mosquitto_broker
from tests.support.mosquitto_clients import mosquitto_pub
from tests.support.waiting import wait_until
from tui import panels
from tui.app import FleetroomApp
from tui.feed import FREEZE_EVERY_CARS, GrowthFreezer, run_feed
from tui.nodeview import NodeOrder, sort_in_runs
from tui.screens import CarScreen
from tui.store import FleetStore
from tui.watch import TelemetryWatch
from tui.widgets import NodeTable

CARS = 200_000
SIZE = (140, 42)


def fleet_from_rosters(topics: Topics) -> FleetStore:
    store = FleetStore(topics)
    for topic, payload in cr.roster_feed(topics, CARS):
        store.ingest(topic, payload)
    return store


async def test_filter_sort_and_drill_down_at_200k_cars_watch_only_the_view(topics: Topics, tmp_path: Path) -> None:
    store = fleet_from_rosters(topics)
    async with mosquitto_broker(topics, tmp_path / "mosquitto") as broker:
        app = FleetroomApp(broker.url(), topics, store=store, refresh_s=0.05, backoff=Backoff(initial_s=0.05),
                           watch=TelemetryWatch(settle_s=0.1))
        async with app.run_test(size=SIZE) as pilot:
            table = app.query_one(NodeTable)
            await wait_until(lambda: app.ready and app.order.settled, what="connected, rows ordered")
            top = table.visible_ids()
            assert top[0] == "car-0000000" and len(top) > 20
            await wait_until(lambda: app.telemetry_watch.subscribed == set(top), what="the view's telemetry")
            await wait_until(lambda: f"telemetry read for the {len(top)} cars on show" in str(
                app.query_one("#strip", Static).content), what="the strip to say whose telemetry is read")

            await pilot.press("1", "1")  # sort by vehicle id, then reversed: a pass in a worker thread
            await wait_until(lambda: app.order.settled and app.order.ids[0] == f"car-{CARS - 1:07d}", timeout=30,
                             what="the reversed order")
            await wait_until(lambda: f"car-{CARS - 1:07d}" in app.telemetry_watch.subscribed
                             and "car-0000000" not in app.telemetry_watch.subscribed, what="the watch to follow")

            wanted = "car-0123457"
            await pilot.press("slash", *wanted, "enter")
            await wait_until(lambda: app.order.settled and app.order.ids == [wanted], timeout=30, what="the filter")
            await pilot.press("enter")
            assert isinstance(app.screen, CarScreen) and app.screen.vehicle_id == wanted
            await wait_until(lambda: app.telemetry_watch.subscribed == {wanted}, what="the drilled car alone")

            out_of_view = "car-0000001"  # published first: had it been subscribed, it would arrive first
            for vid, soc in ((out_of_view, 0.33), (wanted, 0.42)):
                payload = encode(cr.telemetry(vid, soc=soc)).decode()
                assert await mosquitto_pub(broker, "car", "-t", topics.telemetry(vid), "-m", payload) == 0
            await wait_until(lambda: "state of charge 42%" in str(app.screen.query_one("#car-body").render()),
                             what="the car's telemetry in its screen")
            assert store.cars[out_of_view].soc is None and store.cars[wanted].telemetry_live
            assert not store.rejected


def test_sorting_in_runs_is_a_stable_sort() -> None:
    rng = random.Random(7)
    ids = [f"car-{i:03d}" for i in range(500)]
    keys = [float(rng.randrange(20)) for _ in ids]
    for reverse in (False, True):
        expected = [vid for _, vid in sorted(zip(keys, ids, strict=True), key=lambda pair: pair[0], reverse=reverse)]
        assert sort_in_runs(ids, keys, reverse, run=7) == expected
    assert sort_in_runs([], [], False) == []


def test_a_full_pass_is_a_job_for_a_worker_and_a_stale_one_is_dropped(topics: Topics) -> None:
    """The pass is a job of its own (for a worker thread); a stale one is discarded, not adopted."""
    store = FleetStore(topics)
    for topic, payload in cr.roster_feed(topics, 3_000):
        store.ingest(topic, payload)
    order = NodeOrder(auto_resort_limit=1_000)
    assert not order.sync(store, 0.0) or order.ids == store.arrival  # above the limit: no pass inline
    assert not order.settled and order.due(store, 0.0)
    order.set_sort("id", reverse=True)
    stale = order.job(store)
    order.set_sort("id")
    fresh = order.job(store)
    assert not order.adopt(stale, stale.run(), store)
    assert order.adopt(fresh, fresh.run(), store) and order.settled
    assert order.ids == sorted(store.arrival)


def test_the_essay_header_says_a_million_cars_and_labels_only_an_emulated_scale(topics: Topics) -> None:
    store = FleetStore(topics)
    store.ingest(topics.summary, encode(cr.summary(1_000_000, "HW5")))  # cars_per_emulated_car = 1: no label
    header = "\n".join((panels.cars_line(store), panels.equivalence_line(store)))
    assert panels.cars_line(store).startswith("cars 1,000,000: ") and "11,363 Fugakus" in header
    assert "[" not in header and "stands for" not in header
    scaled = cr.summary(1_000_000, "HW5", scale=scale_label(500))  # 2,000 emulated cars shown as a million
    store.ingest(topics.summary, encode(scaled))
    assert panels.equivalence_line(store).endswith(f"[{scale_label(500)}]")


async def test_a_row_out_of_view_shows_its_last_telemetry_greyed(topics: Topics) -> None:
    store = FleetStore(topics)
    store.ingest(topics.telemetry("car-a"), encode(cr.telemetry("car-a", soc=0.8)))
    app = FleetroomApp(BrokerUrl("127.0.0.1", 1), topics, store=store, connect=False)

    def soc_dim() -> bool | None:
        segments = list(app.query_one(NodeTable).render_line(2))  # row 0 is the header, row 1 the cursor
        return next(seg.style.dim for seg in segments if seg.text.strip() == "80%" and seg.style is not None)

    store.ingest(topics.telemetry("car-b"), encode(cr.telemetry("car-b", soc=0.8)))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert not soc_dim()  # its telemetry is read: live
        store.telemetry_unwatched(["car-b"])
        await pilot.pause()
        assert soc_dim()  # no longer read: its last value, greyed


async def test_the_feed_runs_headless_learns_retained_rosters_and_reads_no_telemetry_unasked(
        topics: Topics, tmp_path: Path) -> None:
    store = FleetStore(topics)
    events: list[str] = []
    async with mosquitto_broker(topics, tmp_path / "mosquitto") as broker:
        for topic, payload in cr.roster_feed(topics, 2_000):  # retained before the feed starts
            assert await mosquitto_pub(broker, "gw-0", "-r", "-t", topic, "-s", stdin=payload) == 0
        async with asyncio.TaskGroup() as tasks:
            feed = tasks.create_task(run_feed(broker.url(), store, on_state=lambda e: events.append(e.state.value)))
            await wait_until(lambda: len(store.cars) == 2_000, what="every car from the retained rosters")
            assert events[-1] == "connected" and store.state_counts["On"] == 2_000
            vid = "car-0001999"
            telemetry = encode(cr.telemetry(vid, soc=0.5))
            frame = encode(cr.offer_frame("gw-0", 0, [cr.offer(vid, 1_234.0)]))
            assert await mosquitto_pub(broker, "car", "-t", topics.telemetry(vid), "-s", stdin=telemetry) == 0
            assert await mosquitto_pub(broker, "gw-0", "-t", topics.offer_frames("gw-0"), "-s", stdin=frame) == 0
            await wait_until(lambda: store.cars[vid].offered_tops == 1_234.0, what="the offer frame")
            assert store.cars[vid].soc == 0.8 and not store.cars[vid].telemetry_live  # the offer's, not telemetry's
            assert store.messages == 5 and not store.rejected
            feed.cancel()


def test_a_grown_fleet_is_frozen_out_of_the_collectors_walks(topics: Topics) -> None:
    store = FleetStore(topics)
    freezer = GrowthFreezer(store)
    for topic, payload in cr.roster_feed(topics, FREEZE_EVERY_CARS - 500):
        store.ingest(topic, payload)
    frozen = gc.get_freeze_count()
    freezer.check()
    assert gc.get_freeze_count() == frozen  # not grown enough yet
    store.ingest(*cr.roster_feed(topics, FREEZE_EVERY_CARS)[-1])
    freezer.check()
    try:
        assert gc.get_freeze_count() > frozen + FREEZE_EVERY_CARS and freezer.frozen_at == FREEZE_EVERY_CARS
    finally:
        gc.unfreeze()
