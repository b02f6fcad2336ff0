"""Cars that tests script over a real broker: small aiomqtt clients speaking the wire contract.

Each car announces itself (retained status, with its offline status as Last Will), offers
compute, and re-sends its offer while idle (offers are soft state, like HTCondor's periodic
ClassAd updates). On an assignment it reports progress with a checkpoint at every step and
then a result: honest cars return sha256(input_digest + ":" + shard_id). Behaviours:
`honest`, `wrong` (returns a wrong digest), `preempt` (hands the shard back with its checkpoint
after `steps_before_trouble` steps, then leaves), `vanish` (drops its connection without a
word after `steps_before_trouble` steps, so the broker publishes its Will), `refuse`, `silent`
(takes the shard and never answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

import aiomqtt

from dispatcher.engine import Engine
from dispatcher.ledger import Ledger
from dispatcher.service import DispatcherService, ServiceSettings
from mqttlink import BrokerUrl, cancel_and_wait, client_id_of, make_client
from protocol import (
    ComputeOffer,
    ConnectionStatus,
    FleetSummary,
    HardwareGeneration,
    JobState,
    JobSubmission,
    Liveness,
    OfferWithdrawal,
    ShardAssignment,
    ShardCancel,
    ShardPreempted,
    ShardProgress,
    ShardRefused,
    ShardResult,
    Topics,
    VehicleStatus,
    decode,
    encode,
)
from protocol.clock import SimClock
from tests.support.brokers import TestBroker


def honest_digest(input_digest: str, shard_id: str) -> str:
    return hashlib.sha256(f"{input_digest}:{shard_id}".encode()).hexdigest()


@dataclass
class CarScript:
    """What one scripted car is and how it behaves."""

    vehicle_id: str
    behaviour: str = "honest"
    hardware: HardwareGeneration = HardwareGeneration.HW5
    free_tops: float = 5000.0
    price: float = 0.02
    steps: int = 4
    steps_before_trouble: int = 2
    checkpoint_every: int = 1  # steps between checkpoints (progress is reported every step)
    duplicate_results: bool = False  # deliver every result twice, as QoS 1 may
    step_delay_s: float = 0.02
    offer_every_s: float = 0.3
    refresh_offers: bool = True  # re-send the offer while idle; else offer once per idle spell, heartbeat by status
    departure_in_s: float = 8 * 3600.0
    owner_id: str | None = None


@dataclass
class CarLog:
    """What happened to a scripted car, for assertions."""

    assignments: list[ShardAssignment] = field(default_factory=list)
    cancels: list[ShardCancel] = field(default_factory=list)
    results: list[ShardResult] = field(default_factory=list)
    preempted: list[ShardPreempted] = field(default_factory=list)


class ScriptedCar:
    """One scripted car on its own connection; use as an async context manager."""

    def __init__(self, url: BrokerUrl | Callable[[str], BrokerUrl], topics: Topics, script: CarScript) -> None:
        self.url = url if isinstance(url, BrokerUrl) else url(script.vehicle_id)  # a URL, or one per car
        self.topics, self.script = topics, script
        self.vid = script.vehicle_id
        self.log = CarLog()
        self.busy = False
        self.gone = False
        self._offers = itertools.count()
        self._client: aiomqtt.Client | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _envelope(self) -> dict[str, object]:
        now = datetime.now(UTC)
        return {"sender": self.vid, "sent_at": now, "sim_time": now}

    def _status(self, state: Liveness) -> bytes:
        return encode(VehicleStatus(**self._envelope(), state=state, hardware=self.script.hardware,  # type: ignore[arg-type]
                                    owner_id=self.script.owner_id))

    async def __aenter__(self) -> ScriptedCar:
        will = aiomqtt.Will(self.topics.vehicle_status(self.vid), self._status(Liveness.OFFLINE), qos=1, retain=True)
        self._client = make_client(self.url, client_id_of(self.url, self.vid), will=will, keepalive=5)
        await self._client.__aenter__()
        await self._client.subscribe(self.topics.commands(self.vid), qos=1)
        await self._publish(self.topics.vehicle_status(self.vid), self._status(Liveness.ONLINE), retain=True)
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._keep_offering())]
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await cancel_and_wait(*self._tasks)
        if self._client is not None and not self.gone:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        assert self._client is not None
        if not self.gone:
            await self._client.publish(topic, payload, qos=1, retain=retain)

    async def offer(self) -> None:
        s = self.script
        now = datetime.now(UTC)
        message = ComputeOffer(
            **self._envelope(), offer_id=f"o{next(self._offers)}", hardware=s.hardware, free_tops=s.free_tops,  # type: ignore[arg-type]
            energy_budget_kwh=50.0, expected_departure=now + timedelta(seconds=s.departure_in_s),
            departure_confidence=0.9, price_per_tops_hour=s.price, soc=0.8,
        )
        await self._publish(self.topics.offer(self.vid), encode(message))

    async def _keep_offering(self) -> None:
        await self.offer()
        while not self.gone:
            await asyncio.sleep(self.script.offer_every_s)
            if self.script.refresh_offers and not self.busy:
                await self.offer()
            elif not self.script.refresh_offers:
                await self._publish(self.topics.vehicle_status(self.vid), self._status(Liveness.ONLINE), retain=True)

    async def _listen(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            command = decode(bytes(message.payload))  # type: ignore[arg-type]
            if isinstance(command, ShardCancel):
                self.log.cancels.append(command)
            elif isinstance(command, ShardAssignment):
                self.log.assignments.append(command)
                await self._run(command)

    async def _run(self, job: ShardAssignment) -> None:
        s = self.script
        if s.behaviour == "refuse":
            await self._publish(self.topics.shards(self.vid), encode(ShardRefused(
                **self._envelope(), assignment_id=job.assignment_id, reason="scripted refusal")))  # type: ignore[arg-type]
            return
        self.busy = True
        left = job.work_tera_ops - job.resume_from_tera_ops
        position = saved = job.resume_from_tera_ops
        for step in range(s.steps):
            if s.behaviour in ("preempt", "vanish", "silent") and step == s.steps_before_trouble:
                return await self._trouble(job, position, saved)
            await asyncio.sleep(s.step_delay_s)
            position = min(job.work_tera_ops, position + left / s.steps)
            if (step + 1) % s.checkpoint_every == 0:
                saved = position
            await self._publish(self.topics.shards(self.vid), encode(ShardProgress(
                **self._envelope(), assignment_id=job.assignment_id, job_id=job.job_id,  # type: ignore[arg-type]
                shard_id=job.shard_id, done_tera_ops=position, checkpoint_tera_ops=saved,
                checkpoint=f"ckpt@{saved:.3f}")))
        digest = honest_digest(job.input_digest, job.shard_id)
        if s.behaviour == "wrong":
            digest = hashlib.sha256(f"wrong:{self.vid}:{job.shard_id}".encode()).hexdigest()
        result = ShardResult(**self._envelope(), assignment_id=job.assignment_id, job_id=job.job_id,  # type: ignore[arg-type]
                             shard_id=job.shard_id, result_digest=digest, work_tera_ops=left,
                             energy_kwh=left * 1e-6, elapsed_s=left / job.allocated_tops)
        self.log.results.append(result)
        await self._publish(self.topics.shards(self.vid), encode(result))
        if s.duplicate_results:
            await self._publish(self.topics.shards(self.vid), encode(result))
        self.busy = False
        if not s.refresh_offers:
            await self.offer()

    async def _trouble(self, job: ShardAssignment, position: float, saved: float) -> None:
        behaviour = self.script.behaviour
        if behaviour == "silent":
            return
        if behaviour == "preempt":
            self.gone = True  # the owner drives away: no more offers
            assert self._client is not None
            message = ShardPreempted(
                **self._envelope(), assignment_id=job.assignment_id, job_id=job.job_id, shard_id=job.shard_id,  # type: ignore[arg-type]
                checkpoint_tera_ops=saved, checkpoint=f"ckpt@{saved:.3f}",
                work_tera_ops=position - job.resume_from_tera_ops, energy_kwh=0.001, reason="owner returned")
            self.log.preempted.append(message)
            await self._client.publish(self.topics.shards(self.vid), encode(message), qos=1)
            withdrawal = OfferWithdrawal(**self._envelope(), offer_id="o0", reason="driving away")  # type: ignore[arg-type]
            await self._client.publish(self.topics.offer(self.vid), encode(withdrawal), qos=1)
            return
        self.vanish()

    def vanish(self) -> None:
        """Drop the TCP connection without DISCONNECT, so the broker publishes the Will."""
        self.gone = True
        assert self._client is not None
        sock = self._client._client.socket()  # private: paho's socket, the only way to die uncleanly
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(2)  # no DISCONNECT packet: the broker sees the link die and sends the Will


@contextlib.asynccontextmanager
async def scripted_fleet(url: BrokerUrl | Callable[[str], BrokerUrl], topics: Topics, scripts: list[CarScript]):  # type: ignore[no-untyped-def]
    """Several scripted cars at once."""
    async with contextlib.AsyncExitStack() as stack:
        cars = [await stack.enter_async_context(ScriptedCar(url, topics, s)) for s in scripts]
        yield cars


class Watcher:
    """An operator-side client: submits jobs and keeps the latest JobState and FleetSummary."""

    def __init__(self, url: BrokerUrl, topics: Topics) -> None:
        self.url, self.topics = url, topics
        self.states: dict[str, JobState] = {}
        self.history: dict[str, list[JobState]] = {}
        self.summary: FleetSummary | None = None
        self.summary_seen = asyncio.Event()
        self.connections: dict[str, Liveness] = {}  # process connections' retained status
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        self._client = make_client(self.url, client_id_of(self.url, "watcher"))
        await self._client.__aenter__()
        await self._client.subscribe(self.topics.all_job_states, qos=1)
        await self._client.subscribe(self.topics.summary, qos=1)
        await self._client.subscribe(self.topics.all_connections, qos=1)
        self._task = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self._client is not None
        await cancel_and_wait(self._task)
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(None, None, None)

    async def _listen(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            decoded = decode(bytes(message.payload))  # type: ignore[arg-type]
            if isinstance(decoded, JobState):
                self.states[decoded.job_id] = decoded
                self.history.setdefault(decoded.job_id, []).append(decoded)
            elif isinstance(decoded, ConnectionStatus):
                self.connections[decoded.sender] = decoded.state
            elif isinstance(decoded, FleetSummary):
                self.summary = decoded
                self.summary_seen.set()

    async def publish(self, topic: str, payload: bytes) -> None:
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1)

    async def submit(self, **fields: object) -> str:
        """Submit a job once the dispatcher is up (its summary is seen), so that nothing is lost."""
        await asyncio.wait_for(self.summary_seen.wait(), 15)
        now = datetime.now(UTC)
        job = JobSubmission.model_validate({"sender": "operator", "sent_at": now, "sim_time": now, **fields})
        await self.publish(self.topics.job_submit, encode(job))
        return job.job_id

    def status(self, job_id: str) -> str | None:
        state = self.states.get(job_id)
        return state.status.value if state else None


@contextlib.asynccontextmanager
async def dispatcher_running(
    broker: TestBroker, db: Path, heartbeat_timeout_s: float = 30.0, *, speed: float = 60.0, seed: int = 7,
    spot_check_rate: float | None = None, settings: ServiceSettings | None = None,
    on_summary: Callable[[FleetSummary], None] | None = None,
) -> AsyncIterator[Engine]:
    """A real dispatcher (engine, SQLite ledger, MQTT service) logged in as `dispatcher`."""
    ledger = Ledger(db)
    clock = SimClock(speed=speed)
    checks = {} if spot_check_rate is None else {"spot_check_rate": spot_check_rate}
    engine = Engine(broker.topics, ledger, sim_now=clock.now, wall=time.monotonic, rng=random.Random(seed),
                    speed=speed, heartbeat_timeout_s=heartbeat_timeout_s, **checks)
    settings = settings or ServiceSettings(tick_s=0.05, summary_interval_s=0.2)
    service = DispatcherService(broker.url("dispatcher"), engine, settings, on_summary=on_summary)
    task = asyncio.create_task(service.run())
    # amqtt 0.12.1 iterates every subscription on each new connection and crashes if another
    # client subscribes meanwhile: let the dispatcher finish subscribing before anyone connects.
    await asyncio.wait_for(service.ready.wait(), 10)
    try:
        yield engine
    finally:
        service.stop.set()
        await asyncio.wait_for(task, 10)
        ledger.close()
