"""The control room's reading side: what it subscribes to, and the loop that feeds the store.

`run_feed` needs no Textual app, so a benchmark runs the same ingest path headless. It takes
every car's state (statuses, rosters, offers and offer frames) and the dispatcher's output on
a few wildcard filters, and the telemetry of only the cars a `TelemetryWatch` names (the
view), following it as it changes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Protocol

from mqttlink import Backoff, BrokerUrl, BulkLink, LinkEvent, LinkState, client_id_of, stay_connected_bulk
from protocol import Topics
from protocol.topics import Channel
from tui.store import FleetStore
from tui.watch import TelemetryWatch, WatchChange

log = logging.getLogger(__name__)

INGEST_SLICE_S = 0.02  # the longest the feed holds the event loop (and the UI's paint) before yielding
FREEZE_EVERY_CARS = 10_000
FOLLOW_EVERY_S = 0.1  # how often the feed looks whether the view's wanted telemetry has settled
TELEMETRY_QOS = 0


def state_filters(topics: Topics) -> list[tuple[str, int]]:
    """Every subscription but per-car telemetry: states, offers, frames, jobs, the dispatcher's output.

    Gateways' connection statuses come first, so that a late control room knows which gateways
    are gone before it reads their retained rosters (brokers send retained messages per filter).
    """
    root = topics.root
    filters = [
        topics.all_connections,
        topics.all_rosters,
        topics.all_offer_frames,
        topics.all_vehicles(Channel.VEHICLE_STATUS),
        topics.all_vehicles(Channel.OFFER),
        topics.all_vehicles(Channel.SHARDS),
        topics.all_job_states,
        f"{root}/+",
        f"{root}/+/+",  # summary, earnings, commands, job submissions
    ]
    return [(topic_filter, 1) for topic_filter in filters]


class Subscriber(Protocol):
    """The part of an MQTT client the feed subscribes with."""

    async def subscribe(self, topic: list[tuple[str, int]], /) -> object: ...
    async def unsubscribe(self, topic: list[str], /) -> object: ...


class GrowthFreezer:
    """Moves the store's rows out of the cyclic collector's reach as the fleet grows.

    A million long-lived rows make every full collection walk them all (about 0.3 s here, a
    frozen paint) and make learning the fleet 1.6x slower; they never form garbage cycles, so
    `gc.freeze()` after each `FREEZE_EVERY_CARS` new cars puts them in the permanent generation
    (often: before the first freeze, full collections at 11k, 38k, 94k... cars stalled the UI 0.1-0.2 s).
    """

    def __init__(self, store: FleetStore) -> None:
        self.store = store
        self.frozen_at = 0

    def check(self) -> None:
        if len(self.store.arrival) - self.frozen_at >= FREEZE_EVERY_CARS:
            gc.freeze()
            self.frozen_at = len(self.store.arrival)


def ingest_guarded(store: FleetStore, topic: str, payload: object) -> None:
    """Hand one message to the store; even a bug in applying it must not stop the link."""
    if not isinstance(payload, bytes | bytearray):
        store.messages += 1
        store.reject("invalid", f"payload of type {type(payload).__name__}")
        return
    try:
        store.ingest(topic, payload)
    except Exception as exc:  # counted, logged with its traceback, dropped; the link carries on
        log.exception("could not apply a message on %s", topic)
        store.reject("unhandled", f"{type(exc).__name__}: {exc}")


async def apply_change(client: Subscriber, topics: Topics, store: FleetStore, watch: TelemetryWatch,
                       change: WatchChange) -> None:
    """Subscribe to the newly wanted cars' telemetry, then drop the others' (their rows go grey)."""
    if change.add:
        await client.subscribe([(topics.telemetry(vid), TELEMETRY_QOS) for vid in change.add])
    if change.remove:
        await client.unsubscribe([topics.telemetry(vid) for vid in change.remove])
    watch.applied(change)
    store.telemetry_unwatched(change.remove)


async def follow_view(client: Subscriber, topics: Topics, store: FleetStore, watch: TelemetryWatch,
                      clock: Callable[[], float]) -> None:
    """Keep the telemetry subscriptions on the watch's wanted cars, and per-car earnings on drilled cars."""
    earnings: set[str] = set(store.earnings.watched)
    while True:
        change = watch.change(clock())
        if change is not None:
            await apply_change(client, topics, store, watch, change)
        new = store.earnings.watched - earnings
        if new:  # their ledger figures, retained, as long as the session lasts
            await client.subscribe([(topics.car_earnings(vid), 1) for vid in sorted(new)])
            earnings |= new
        await asyncio.sleep(FOLLOW_EVERY_S)


async def ingest_batches(link: BulkLink, store: FleetStore) -> None:
    """Feed the store every batch the link delivers, yielding to the UI every `INGEST_SLICE_S`."""
    freezer = GrowthFreezer(store)
    slice_ends = time.perf_counter() + INGEST_SLICE_S
    async for batch in link.batches():
        for received in batch:
            ingest_guarded(store, received.topic, received.payload)
            if time.perf_counter() > slice_ends:  # a roster of 500 cars takes ~1 ms: yield by time, not count
                freezer.check()
                await asyncio.sleep(0)
                slice_ends = time.perf_counter() + INGEST_SLICE_S


async def read_session(link: BulkLink, topics: Topics, store: FleetStore, watch: TelemetryWatch | None,
                       clock: Callable[[], float], subscribed: Callable[[], None]) -> None:
    """One connected session: subscribe, follow the view, and feed every message to the store."""
    if watch is not None:  # a new session has none of the old one's subscriptions
        store.telemetry_unwatched(watch.subscribed)
        watch.lost()
    watched = [(topics.car_earnings(vid), 1) for vid in sorted(store.earnings.watched)]
    await link.subscribe([*state_filters(topics), *watched])
    subscribed()
    lost: OSError | None = None
    try:
        async with asyncio.TaskGroup() as tasks:
            follower = tasks.create_task(follow_view(link, topics, store, watch, clock)) if watch else None
            await ingest_batches(link, store)
            if follower is not None:
                follower.cancel()
    except* OSError as group:  # BulkLinkError: the link was lost
        lost = group.exceptions[0]  # type: ignore[assignment]
    if lost is not None:  # raised after except*, so that stay_connected_bulk sees the error itself
        raise lost


async def run_feed(url: BrokerUrl, store: FleetStore, *, client_id: str | None = None,
                   watch: TelemetryWatch | None = None, clock: Callable[[], float] | None = None,
                   on_state: Callable[[LinkEvent], None] | None = None, backoff: Backoff | None = None,
                   must_connect_first: bool = False) -> None:
    """Feed `store` from the broker at `url` until cancelled, reconnecting with backoff.

    Reads through `mqttlink.BulkLink`: whole batches at the broker's pace, no await per message;
    a reader that falls behind makes the broker wait (TCP) rather than lose messages.
    """
    tick = clock or time.monotonic
    notify = on_state or (lambda event: None)

    def link_event(event: LinkEvent) -> None:
        if event.state is not LinkState.CONNECTED:  # said once subscribed: "connected" means "reading"
            notify(event)

    async def session(link: BulkLink) -> None:
        await read_session(link, store.topics, store, watch, tick, lambda: notify(LinkEvent(LinkState.CONNECTED)))

    await stay_connected_bulk(url, client_id or client_id_of(url, "observer"), session, on_state=link_event,
                              backoff=backoff, must_connect_first=must_connect_first)
