"""The observer: one MQTT connection that watches the whole topic root and publishes the harness's
jobs and fleet commands, folding every message it sees into a `RunLedger`.

It reads through `mqttlink.BulkLink`, in batches at the broker's pace: when it falls behind, the
link stops reading and TCP makes the broker queue (Mosquitto's `max_queued_messages`), so nothing
is dropped on the observer's side; gateway frames are decoded with `decode_frame`.

Latency is measured here as wall time now minus the message's `sent_at` (every process runs on
this machine, so their clocks agree); retained messages and Last Wills are old by design and
are not timed. Once a second the observer also sends itself a probe: its latency is the floor
that the broker and the observer's own backlog add, so a slow observer shows up as itself. The
probe is a non-retained status on the observer's own process topic (`connections/<its user>/status`,
the only one the ACL lets it write), marked with its instance; a read-only login sends none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque

from broker.acl import FleetAcl
from fleetroom.loadtest.ledger import RunLedger
from mqttlink import BrokerUrl, BulkLink, BulkLinkError, LinkEvent, LinkState, client_id_of, stay_connected_bulk
from protocol import (
    Channel,
    ConnectionStatus,
    JobSubmission,
    Liveness,
    ProtocolError,
    Topics,
    VehicleStatus,
    decode_on,
    encode,
    utc_now,
)
from protocol.codec import AnyMessage

log = logging.getLogger(__name__)
PROBE_EVERY_S = 1.0
PUBLISH_TIMEOUT_S = 10.0  # a job or command the broker has not acknowledged by then: the link is lost
SLICE = 2000  # messages handled between two chances for the sender to run


def _is_will(message: AnyMessage) -> bool:
    """An offline status may be a Last Will, stamped when its sender connected: not a latency sample."""
    return isinstance(message, VehicleStatus | ConnectionStatus) and message.state is not Liveness.ONLINE


class Observer:
    """Watches the topic root and sends what the harness submits, across reconnects.

    With `telemetry_sample` N, it takes the telemetry of only the first N cars it sees (the rest
    of the traffic in full), so that one Python process can watch a fleet of tens of thousands.
    """

    def __init__(
        self, url: BrokerUrl, topics: Topics, ledger: RunLedger, started_at: float, *, telemetry_sample: int = 0
    ) -> None:
        self.url = url
        self.telemetry_sample = telemetry_sample  # 0: every car's telemetry; N: only the first N cars seen
        self._sampled: list[str] = []
        self._new_samples: deque[str] = deque()
        self.topics = topics
        self.ledger = ledger
        self.started_at = started_at  # time.monotonic() at the start of the run
        self.client_id = client_id_of(url, "observer")
        self.instance = secrets.token_hex(6)
        # an anonymous observer names its probe's topic itself; a logged-in one uses its user name
        self.probe_name = url.username or f"observer-{self.instance}"
        probe_topic = topics.connection_status(self.probe_name)
        may_probe = url.username is None or FleetAcl(topics).may_publish(url.username, probe_topic)
        self.probe_topic = probe_topic if may_probe else None
        self.connected = asyncio.Event()
        self._outbox: deque[tuple[str, AnyMessage]] = deque()
        self._wakeup = asyncio.Event()
        self._links = 0

    def now_s(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started_at

    # publishing ---------------------------------------------------------------------------
    def submit(self, job: JobSubmission) -> None:
        """Queue a job; it counts as submitted when the broker has acknowledged it."""
        self._outbox.append((self.topics.job_submit, job))
        self._wakeup.set()

    def send(self, topic: str, message: AnyMessage) -> None:
        """Queue a command (QoS 1), sent as soon as the connection is up."""
        self._outbox.append((topic, message))
        self._wakeup.set()

    async def _drain_outbox(self, link: BulkLink) -> None:
        try:
            await self._send_forever(link)
        except (OSError, TimeoutError) as exc:  # BulkLinkError is an OSError
            self.ledger.publish_failed()
            log.info("publish failed (%s); reconnecting", exc)

    async def _send_forever(self, link: BulkLink) -> None:
        loop = asyncio.get_running_loop()
        next_probe = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), PROBE_EVERY_S)
            self._wakeup.clear()
            while self._new_samples:
                await link.subscribe([(self.topics.telemetry(self._new_samples[0]), 0)], timeout=10)
                self._new_samples.popleft()
            if self.probe_topic is not None and loop.time() >= next_probe:
                next_probe = loop.time() + PROBE_EVERY_S
                link.publish(self.probe_topic, self._probe(), qos=0)
            while self._outbox:
                topic, message = self._outbox[0]
                link.publish(topic, encode(message), qos=1)
                await asyncio.wait_for(link.wait_acknowledged(), PUBLISH_TIMEOUT_S)
                self._outbox.popleft()
                if isinstance(message, JobSubmission):
                    self.ledger.job_submitted(message.job_id, self.now_s())
                else:
                    self.ledger.published()

    def _probe(self) -> bytes:
        """A message to ourselves: its latency is the floor the broker and the observer add."""
        now = utc_now()
        return encode(ConnectionStatus(sender=self.probe_name, sent_at=now, sim_time=now, role="observer",
                                       state=Liveness.ONLINE, instance=self.instance))

    # receiving ----------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        """Decode and fold one message (a gateway frame as one); a bad one is counted and dropped."""
        try:
            info, message = decode_on(self.topics, topic, payload)
        except ProtocolError as exc:
            self.ledger.rejected()
            log.debug("rejected %s: %s", topic, exc)
            return
        latency = None if retained or _is_will(message) else time.time() - message.sent_at.timestamp()
        if self.telemetry_sample and isinstance(message, VehicleStatus):
            self._sample(message.sender)
        if isinstance(message, ConnectionStatus) and message.instance == self.instance:
            if latency is not None:
                self.ledger.probe_latency.record(latency, self.now_s())
            return
        self.ledger.observe(info, message, self.now_s(), latency)

    def _sample(self, car: str) -> None:
        if len(self._sampled) < self.telemetry_sample and car not in self._sampled:
            self._sampled.append(car)
            self._new_samples.append(car)
            self._wakeup.set()

    def _filters(self) -> list[tuple[str, int]]:
        """Everything, or everything but telemetry plus the sampled cars' telemetry."""
        t = self.topics
        if not self.telemetry_sample:
            return [(t.everything, 1)]
        channels = (Channel.VEHICLE_STATUS, Channel.OFFER, Channel.SHARDS)
        filters = [t.all_vehicles(c) for c in channels] + [
            t.all_rosters, t.all_offer_frames,
            t.all_commands, t.all_connections, t.job_submit, t.all_job_states, t.summary,
            t.dispatcher_control, t.fleet_control,
        ]
        return [(f, 1) for f in filters] + [(t.telemetry(car), 0) for car in self._sampled]

    async def _session(self, link: BulkLink) -> None:
        """Read in batches at the broker's pace: the link stops reading when behind, it never drops."""
        self._new_samples.clear()  # a fresh session subscribes every sampled car below
        await link.subscribe(self._filters(), timeout=10)
        self.connected.set()
        # Not a TaskGroup: stay_connected_bulk must see the BulkLinkError itself, not an ExceptionGroup.
        sender = asyncio.create_task(self._drain_outbox(link))
        self._wakeup.set()
        try:
            async for batch in link.batches():
                for start in range(0, len(batch), SLICE):
                    if sender.done():
                        raise BulkLinkError("a publish failed")
                    for message in batch[start:start + SLICE]:
                        self.handle(message.topic, message.payload, message.retain)
                    await asyncio.sleep(0)  # the sender submits jobs between slices of a long batch
        finally:
            sender.cancel()
            self.connected.clear()

    def _on_state(self, event: LinkEvent) -> None:
        if event.state is LinkState.CONNECTED:
            self._links += 1
            if self._links > 1:
                self.ledger.counters.observer_reconnects += 1

    async def run(self) -> None:
        """Stay connected until cancelled."""
        await stay_connected_bulk(self.url, self.client_id, self._session, on_state=self._on_state, keepalive=10)
