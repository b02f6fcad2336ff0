"""The dispatcher's async shell: MQTT messages to `Engine.handle`, timers to `tick` and `summary`.

One `BulkLink` connection (user `dispatcher`) with a retained Last Will saying it is offline; it
reads cars' states, offers and results in whole batches at the broker's pace (pausing the socket,
never dropping, when the engine falls behind), and the engine and its ledger outlive
reconnections. Publishing runs in its own task behind a queue so that a slow broker never blocks
reading; what the broker had not acknowledged when a link died is sent again after the reconnect.
With a metrics port, every summary it publishes is also what `/metrics` serves (`dispatcher.metrics`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from dispatcher.collector import tune_collector
from dispatcher.engine import Engine
from dispatcher.loop_watch import LoopWatch
from dispatcher.metrics import MetricsEndpoint, SummaryCollector, serve_metrics
from dispatcher.views import SENDER, Out
from mqttlink import BrokerUnreachable, BrokerUrl, BulkLink, BulkLinkError, WillSpec, client_id_of, stay_connected_bulk
from protocol.base import utc_now
from protocol.codec import encode
from protocol.fleet_messages import FleetSummary
from protocol.topics import DELIVERY, Channel
from protocol.vehicle_messages import ConnectionStatus, Liveness

log = logging.getLogger(__name__)
T = TypeVar("T")

VEHICLE_CHANNELS = (Channel.VEHICLE_STATUS, Channel.OFFER, Channel.SHARDS, Channel.TRIPS)
"""Per-car channels the dispatcher reads: states, offers and results; not telemetry (the control room's)."""
READ_SLICE = 500  # messages handled between two turns of the event loop (timers, publishing, reading run between) ...
READ_SLICE_S = 0.02  # ... or fewer, once this many wall seconds went by: one roster frame is 500 cars' work
REPORT_SHARE = 10  # the earnings report runs again no sooner than this many times the time it took
MAX_UNACKED = 5000  # QoS 1 publishes in flight before publishing waits for acknowledgements


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Timers of the shell, in wall seconds."""

    tick_s: float = 0.2
    summary_interval_s: float = 1.0
    earnings_every: int = 5  # summaries between two earnings reports
    max_buffered: int = 500_000  # messages read and not yet handled before reading pauses (nothing is dropped)
    goodbye_timeout_s: float = 5.0  # how long a clean stop waits for the broker to acknowledge the last messages
    metrics_port: int | None = None  # serve /metrics on this port (0: any free one); None: not at all
    metrics_host: str = "127.0.0.1"


class DispatcherService:
    """Runs an `Engine` against a broker until `stop` is set."""

    def __init__(
        self, url: BrokerUrl, engine: Engine, settings: ServiceSettings,
        on_summary: Callable[[FleetSummary], None] | None = None,
        on_metrics: Callable[[str], None] | None = None,
    ) -> None:
        self.url, self.engine, self.settings = url, engine, settings
        self.on_summary = on_summary or (lambda summary: None)
        self.on_metrics = on_metrics or (lambda url: None)  # told the /metrics URL once it is served
        self.metrics = SummaryCollector()
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.loop_watch = LoopWatch()  # a stalled loop is logged with the step it is stuck in
        self.status_topic = engine.topics.connection_status(SENDER)
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()  # set once subscribed, after every (re)connection
        # what is still to publish survives a lost connection: the ledger already counts on it
        self._outbox: asyncio.Queue[Out] = asyncio.Queue()
        self._unsent: list[Out] = []  # a batch whose publishing was interrupted, sent first
        self._in_hand = 0  # messages of the batch being handled that are still to handle
        for out in engine.startup():
            self._outbox.put_nowait(out)

    def _status(self, state: Liveness) -> bytes:
        message = ConnectionStatus(sender=SENDER, sent_at=utc_now(), sim_time=self.engine.clock.sim_now(),
                                   role="dispatcher", state=state)
        return encode(message)

    async def run(self) -> None:
        """Serve until stopped; a broker that cannot be reached at first raises `BrokerUnreachable`,
        a metrics port that cannot be bound `OSError`."""
        settings = self.settings
        tune_collector()  # a million cars' records: the default collector thresholds cost 40 % of ingest
        if settings.metrics_port is not None:
            self.metrics_endpoint = serve_metrics(self.metrics, settings.metrics_host, settings.metrics_port)
            self.on_metrics(self.metrics_endpoint.url)
        self.loop_watch.start()
        try:
            await self._serve()
        finally:
            self.loop_watch.close()
            if self.metrics_endpoint is not None:
                await asyncio.to_thread(self.metrics_endpoint.close)
                self.metrics_endpoint = None

    async def _serve(self) -> None:
        status = DELIVERY[Channel.CONNECTION_STATUS]
        will = WillSpec(self.status_topic, self._status(Liveness.OFFLINE), status.qos, status.retain)
        # raised after the except* block, not in it: Python before 3.11.4 (Debian 12's 3.11.2) wraps an
        # exception raised inside except* in an ExceptionGroup, which no caller's `except X` catches
        unreachable: BaseException | None = None
        try:
            await stay_connected_bulk(self.url, client_id_of(self.url, "dispatcher"), self._session, will=will,
                                      max_buffered=self.settings.max_buffered)
        except* BrokerUnreachable as group:
            unreachable = group.exceptions[0]
        if unreachable is not None:
            raise unreachable from None

    def _filters(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """What the dispatcher reads: the bulk (cars' states, offers and results, per car or in gateways'
        frames, and fleets' connections), and its own control channels (jobs submitted, policy)."""
        topics = self.engine.topics
        per_car = [(topics.all_vehicles(channel), channel) for channel in VEHICLE_CHANNELS]
        bulk = [(topics.all_connections, Channel.CONNECTION_STATUS), (topics.all_rosters, Channel.ROSTER),
                (topics.all_offer_frames, Channel.OFFER_FRAME)]
        control = [(topics.job_submit, Channel.JOB_SUBMIT), (topics.dispatcher_control, Channel.DISPATCHER_CONTROL)]
        return ([(topic_filter, DELIVERY[channel].qos) for topic_filter, channel in per_car + bulk],
                [(topic_filter, DELIVERY[channel].qos) for topic_filter, channel in control])

    async def _session(self, link: BulkLink) -> None:
        """Serve on `link` (publishing, the Will, the control channels) and a second link that reads the bulk.

        Two connections, because the broker sends its acknowledgements of what the dispatcher publishes
        on the same connection as what it delivers to it: behind a backlog of a million cars' frames an
        assignment's PUBACK, and so the next assignment, waited for tens of seconds.
        """
        bulk_filters, control_filters = self._filters()
        reader = BulkLink(self.url, client_id_of(self.url, "dispatcher"), keepalive=link.keepalive,
                          max_buffered=self.settings.max_buffered)
        await reader.connect()
        try:
            await reader.subscribe(bulk_filters)
            await link.subscribe(control_filters)
            await self._serve_links(link, reader)
        finally:
            await reader.close()

    async def _serve_links(self, link: BulkLink, reader: BulkLink) -> None:
        # online only once subscribed: fleets announce their cars again when they see it
        self._publish_status(link, Liveness.ONLINE)
        self.ready.set()
        outbox = self._outbox
        lost: BulkLinkError | None = None
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(reader, outbox))
                group.create_task(self._read(link, outbox, bulk=False))
                group.create_task(self._publish(link, outbox))
                group.create_task(self._tick(outbox))
                group.create_task(self._summarise(outbox, lambda: reader.buffered + link.buffered + self._in_hand))
                await self.stop.wait()
                raise _Stopped
        except* _Stopped:
            pass
        except* BulkLinkError as group_lost:
            lost = _first(group_lost)
        finally:
            self.ready.clear()
        if lost is not None:  # raised outside except* (see _serve), so stay_connected_bulk reconnects
            # what the broker never acknowledged goes out again first (QoS 1 receivers take duplicates;
            # a lost assignment would wait for the silence limit and count as a preemption)
            self._unsent = [Out(o.topic, o.payload, 1, o.retain) for o in link.unacked] + self._unsent
            raise lost from None
        leftovers, self._unsent = self._unsent, []
        while not outbox.empty():
            leftovers.append(outbox.get_nowait())
        for out in leftovers:
            link.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)
        self._publish_status(link, Liveness.OFFLINE)
        try:
            async with asyncio.timeout(self.settings.goodbye_timeout_s):
                await link.wait_acknowledged()
        except (TimeoutError, BulkLinkError) as exc:  # stopping anyway: the Will says offline if this did not
            log.warning("the last messages may not have reached the broker: %s", exc or "no acknowledgement in time")

    def _publish_status(self, link: BulkLink, state: Liveness) -> None:
        status = DELIVERY[Channel.CONNECTION_STATUS]
        link.publish(self.status_topic, self._status(state), qos=status.qos, retain=status.retain)

    def _contained(self, step: Callable[[], T], what: str, *args: object) -> T | None:
        """Run one step of the control plane: a bug costs that step (logged with `what % args`,
        counted as `internal_error`, None returned), never the process."""
        try:
            return step()
        except Exception:
            log.exception(what + " failed", *args)
            self.engine.refusals.tally("internal_error")
            return None

    async def _read(self, link: BulkLink, outbox: asyncio.Queue[Out], *, bulk: bool = True) -> None:
        """Hand every message of each batch to the engine, letting timers and publishing run between slices;
        the bulk reader's backlog is what the summary shows."""
        clock = time.monotonic
        async for batch in link.batches():
            start = 0
            while start < len(batch):
                if bulk:
                    self._in_hand = len(batch) - start  # the backlog as this slice began
                slice_ends, index = clock() + READ_SLICE_S, start
                for index in range(start, min(len(batch), start + READ_SLICE)):
                    topic, payload, _ = batch[index]
                    handle = partial(self.engine.handle, topic, payload)
                    for out in self._contained(handle, "handling a message on %s", topic) or ():
                        outbox.put_nowait(out)
                    if clock() >= slice_ends:
                        break
                start = index + 1
                await asyncio.sleep(0)
            if bulk:
                self._in_hand = 0

    async def _publish(self, link: BulkLink, outbox: asyncio.Queue[Out]) -> None:
        while True:
            if self._unsent:
                batch, self._unsent = self._unsent, []
            else:
                batch = [await outbox.get()]
                while not outbox.empty() and len(batch) < 256:
                    batch.append(outbox.get_nowait())
            for index, out in enumerate(batch):
                try:
                    link.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)
                except BulkLinkError:
                    self._unsent = batch[index:]  # sent again after the reconnect, after what was unacknowledged
                    raise
            await link.wait_acknowledged(below=MAX_UNACKED)  # a slow broker slows publishing, not reading

    async def _tick(self, outbox: asyncio.Queue[Out]) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            for out in self._contained(self.engine.tick, "a scheduling tick") or ():
                outbox.put_nowait(out)

    async def _summarise(self, outbox: asyncio.Queue[Out], backlog: Callable[[], int]) -> None:
        report_due = 0.0  # monotonic time of the next earnings report
        for count in itertools.count():
            build = partial(self.engine.summary, ingest_backlog=backlog())
            summary = self._contained(build, "building the fleet summary")
            if summary is not None:
                outbox.put_nowait(Out.on(Channel.SUMMARY, self.engine.topics.summary, summary))
                self.metrics.observe(summary)  # the same summary, never a second computation
                self.on_summary(summary)
            if count % self.settings.earnings_every == 0 and time.monotonic() >= report_due:
                # the report sums every car (seconds at a million): in a thread, on its own connection, and
                # at most a tenth of the time, so that it never takes a core from the fleet's intake
                started = time.monotonic()
                for out in self._contained(self.engine.earnings_cars, "building the cars' earnings") or ():
                    outbox.put_nowait(out)
                report = self._contained
                for out in await asyncio.to_thread(report, self.engine.earnings_report, "building the earnings") or ():
                    outbox.put_nowait(out)
                report_due = started + REPORT_SHARE * (time.monotonic() - started)
            await asyncio.sleep(self.settings.summary_interval_s)


def _first(group: BaseExceptionGroup[BulkLinkError]) -> BulkLinkError:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


class _Stopped(Exception):
    """Raised inside the session's task group to end it cleanly."""
