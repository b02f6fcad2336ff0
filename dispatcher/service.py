"""The dispatcher's async shell: MQTT messages to `Engine.handle`, timers to `tick` and `summary`.

One connection (user `dispatcher`) with a retained Last Will saying it is offline; the engine
and its ledger outlive reconnections. Publishing runs in its own task behind a queue so that a
slow broker never blocks reading. With a metrics port, every summary it publishes is also what
`/metrics` serves (`dispatcher.metrics`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import aiomqtt

from dispatcher.engine import Engine
from dispatcher.metrics import MetricsEndpoint, SummaryCollector, serve_metrics
from dispatcher.views import SENDER, Out
from mqttlink import BrokerUnreachable, BrokerUrl, client_id_of, stay_connected
from protocol.base import utc_now
from protocol.codec import encode
from protocol.fleet_messages import FleetSummary
from protocol.topics import DELIVERY, Channel
from protocol.vehicle_messages import ConnectionStatus, Liveness

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Timers of the shell, in wall seconds."""

    tick_s: float = 0.2
    summary_interval_s: float = 1.0
    earnings_every: int = 5  # summaries between two earnings reports
    max_queued_incoming: int = 200_000
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
        self.status_topic = engine.topics.connection_status(SENDER)
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()  # set once subscribed, after every (re)connection
        # what is still to publish survives a lost connection: the ledger already counts on it
        self._outbox: asyncio.Queue[Out] = asyncio.Queue()
        self._unsent: list[Out] = []  # a batch whose publishing was interrupted, sent first
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
        if settings.metrics_port is not None:
            self.metrics_endpoint = serve_metrics(self.metrics, settings.metrics_host, settings.metrics_port)
            self.on_metrics(self.metrics_endpoint.url)
        try:
            await self._serve()
        finally:
            if self.metrics_endpoint is not None:
                await asyncio.to_thread(self.metrics_endpoint.close)
                self.metrics_endpoint = None

    async def _serve(self) -> None:
        status = DELIVERY[Channel.CONNECTION_STATUS]
        will = aiomqtt.Will(self.status_topic, self._status(Liveness.OFFLINE), qos=status.qos, retain=status.retain)
        # raised after the except* block, not in it: Python before 3.11.4 (Debian 12's 3.11.2) wraps an
        # exception raised inside except* in an ExceptionGroup, which no caller's `except X` catches
        unreachable: BaseException | None = None
        try:
            await stay_connected(
                self.url, client_id_of(self.url, "dispatcher"), self._session, will=will,
                max_queued_incoming=self.settings.max_queued_incoming, on_drop=self._dropped,
            )
        except* BrokerUnreachable as group:
            unreachable = group.exceptions[0]
        if unreachable is not None:
            raise unreachable from None

    def _dropped(self) -> None:
        """A message found the incoming queue full and was lost: count it with the rejected ones."""
        self.engine.refusals.tally("backlog_full")

    async def _session(self, client: aiomqtt.Client) -> None:
        topics = self.engine.topics
        client.pending_calls_threshold = 1000  # we publish in batches of up to 256 on purpose
        for channel in (Channel.VEHICLE_STATUS, Channel.OFFER, Channel.SHARDS, Channel.TELEMETRY, Channel.TRIPS):
            await client.subscribe(topics.all_vehicles(channel), qos=DELIVERY[channel].qos)
        for topic, channel in ((topics.all_connections, Channel.CONNECTION_STATUS),
                               (topics.job_submit, Channel.JOB_SUBMIT),
                               (topics.dispatcher_control, Channel.DISPATCHER_CONTROL),
                               (topics.all_rosters, Channel.ROSTER), (topics.all_offer_frames, Channel.OFFER_FRAME)):
            await client.subscribe(topic, qos=DELIVERY[channel].qos)
        # online only once subscribed: fleets announce their cars again when they see it
        await self._publish_status(client, Liveness.ONLINE)
        self.ready.set()
        outbox = self._outbox
        lost: aiomqtt.MqttError | None = None
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(client, outbox))
                group.create_task(self._publish(client, outbox))
                group.create_task(self._tick(outbox))
                group.create_task(self._summarise(outbox, lambda: len(client.messages)))
                await self.stop.wait()
                raise _Stopped
        except* _Stopped:
            pass
        except* aiomqtt.MqttError as group_lost:
            lost = _first(group_lost)
        finally:
            self.ready.clear()
        if lost is not None:  # a plain MqttError, raised outside except* (see _serve), so stay_connected reconnects
            raise lost from None
        leftovers, self._unsent = self._unsent, []
        while not outbox.empty():
            leftovers.append(outbox.get_nowait())
        for out in leftovers:
            await client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)
        await self._publish_status(client, Liveness.OFFLINE)

    async def _publish_status(self, client: aiomqtt.Client, state: Liveness) -> None:
        status = DELIVERY[Channel.CONNECTION_STATUS]
        await client.publish(self.status_topic, self._status(state), qos=status.qos, retain=status.retain)

    def _contained(self, step: Callable[[], T], what: str, *args: object) -> T | None:
        """Run one step of the control plane: a bug costs that step (logged with `what % args`,
        counted as `internal_error`, None returned), never the process."""
        try:
            return step()
        except Exception:
            log.exception(what + " failed", *args)
            self.engine.refusals.tally("internal_error")
            return None

    async def _read(self, client: aiomqtt.Client, outbox: asyncio.Queue[Out]) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            topic = str(message.topic)
            handle = partial(self.engine.handle, topic, bytes(payload))
            for out in self._contained(handle, "handling a message on %s", topic) or ():
                outbox.put_nowait(out)

    async def _publish(self, client: aiomqtt.Client, outbox: asyncio.Queue[Out]) -> None:
        while True:
            if self._unsent:
                batch, self._unsent = self._unsent, []
            else:
                batch = [await outbox.get()]
                while not outbox.empty() and len(batch) < 256:
                    batch.append(outbox.get_nowait())
            try:
                await asyncio.gather(
                    *(client.publish(o.topic, o.payload, qos=o.qos, retain=o.retain) for o in batch)
                )
            except BaseException:
                # lost connection or cancelled with it: send the whole batch again after the
                # reconnect (QoS 1 receivers take duplicates; a lost assignment would wait for
                # the silence limit and count as a preemption)
                self._unsent = batch
                raise

    async def _tick(self, outbox: asyncio.Queue[Out]) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            for out in self._contained(self.engine.tick, "a scheduling tick") or ():
                outbox.put_nowait(out)

    async def _summarise(self, outbox: asyncio.Queue[Out], backlog: Callable[[], int]) -> None:
        for count in itertools.count():
            build = partial(self.engine.summary, ingest_backlog=backlog())
            summary = self._contained(build, "building the fleet summary")
            if summary is not None:
                outbox.put_nowait(Out.on(Channel.SUMMARY, self.engine.topics.summary, summary))
                self.metrics.observe(summary)  # the same summary, never a second computation
                self.on_summary(summary)
            if count % self.settings.earnings_every == 0:  # the report sums every car: in a thread, its own connection
                for out in self._contained(self.engine.earnings_cars, "building the cars' earnings") or ():
                    outbox.put_nowait(out)
                report = self._contained
                for out in await asyncio.to_thread(report, self.engine.earnings_report, "building the earnings") or ():
                    outbox.put_nowait(out)
            await asyncio.sleep(self.settings.summary_interval_s)


def _first(group: BaseExceptionGroup[aiomqtt.MqttError]) -> aiomqtt.MqttError:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


class _Stopped(Exception):
    """Raised inside the session's task group to end it cleanly."""
