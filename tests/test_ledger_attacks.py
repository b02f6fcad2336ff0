"""Money attacks from outside: a car's own login and `mosquitto_pub`/`mosquitto_sub`, on both brokers.

A running dispatcher (spot-checking every result) and the ledger it writes. The attacker is
car-aa (and car-bb when two cars collude), logged in with its derived password and a client
id of its own (`car-aa:1`); it reads its assignments with mosquitto_sub and forges everything
else with mosquitto_pub. Each test asserts, on the ledger and on the FleetSummary the control
room reads, that nothing was paid beyond the rules and that the refusals were counted.

The shard needs 600 simulated seconds at the attacker's 5,000 TOPS: 10 wall seconds at 60x.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.engine import Engine
from protocol import (
    ComputeOffer,
    HardwareGeneration,
    Liveness,
    OwnerMode,
    ShardAssignment,
    ShardPreempted,
    ShardProgress,
    ShardResult,
    VehicleStatus,
    decode,
    encode,
)
from protocol.codec import AnyMessage
from protocol.identity import derive_password
from protocol.job_messages import result_digest
from protocol.owners import RobotaxiTrip
from tests.conftest import SECRET
from tests.support.brokers import TestBroker, require_mosquitto
from tests.support.scripted_cars import Watcher, dispatcher_running
from tests.support.waiting import wait_until


@pytest.fixture(autouse=True)
def _mosquitto_clients() -> None:
    """The attacks run mosquitto_pub and mosquitto_sub, on either broker: fail, never skip, without them."""
    require_mosquitto()


SPEED = 60.0
TOPS = 5000.0
SHARD = 3_000_000.0
JOB = {"name": "attacked", "total_work_tera_ops": SHARD, "shards": 1, "min_tops_per_car": 100.0,
       "checkpoint_interval_s": 60.0}


def dispatcher(broker: TestBroker, db: Path) -> contextlib.AbstractAsyncContextManager[Engine]:
    """A dispatcher logged in as `dispatcher`, every result spot-checked."""
    return dispatcher_running(broker, db, 60.0, speed=SPEED, seed=5, spot_check_rate=1.0)


class Attacker:
    """A car's login used from the command line: mosquitto_sub reads its commands, mosquitto_pub forges."""

    def __init__(self, broker: TestBroker, vehicle_id: str) -> None:
        self.broker, self.vid = broker, vehicle_id
        self.password = derive_password(SECRET, vehicle_id)
        self.assignments: list[ShardAssignment] = []
        self._sub: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._published = 0

    def _login(self, suffix: str) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.broker.port), "-u", self.vid, "-P", self.password,
                "-i", f"{self.vid}:{suffix}"]

    async def __aenter__(self) -> Attacker:
        topic = self.broker.topics.commands(self.vid)
        self._sub = await asyncio.create_subprocess_exec(  # stdbuf: mosquitto_sub's lines as they come
            "stdbuf", "-oL", "mosquitto_sub", *self._login("sub"), "-q", "1", "-d", "-t", topic,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self._subscribed.wait(), 10)  # -d says when the SUBACK came back
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None and self._sub.returncode is None:
            self._sub.terminate()
            await self._sub.wait()
        if self._reader is not None:
            await self._reader

    async def _read(self) -> None:
        assert self._sub is not None and self._sub.stdout is not None
        async for raw in self._sub.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("Subscribed"):
                self._subscribed.set()
            elif line.startswith("{"):
                message = decode(line.encode())
                if isinstance(message, ShardAssignment):
                    self.assignments.append(message)

    def env(self) -> dict[str, object]:
        now = datetime.now(UTC)
        return {"sender": self.vid, "sent_at": now, "sim_time": now}

    async def publish(self, topic: str, message: AnyMessage, *, retain: bool = False) -> None:
        """One message over its own connection, as `mosquitto_pub` sends it (QoS 1)."""
        self._published += 1
        args = [*self._login(f"pub{self._published}"), "-q", "1", "-t", topic, "-m", encode(message).decode()]
        proc = await asyncio.create_subprocess_exec(
            "mosquitto_pub", *args, *(["-r"] if retain else []),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()

    async def offer(self, tops: float = TOPS, hardware: HardwareGeneration = HardwareGeneration.HW5) -> None:
        now = datetime.now(UTC)
        await self.publish(self.broker.topics.offer(self.vid), ComputeOffer(
            **self.env(), offer_id=f"o{self._published}", hardware=hardware, free_tops=tops,  # type: ignore[arg-type]
            energy_budget_kwh=50.0, expected_departure=now + timedelta(hours=8), departure_confidence=0.9,
            price_per_tops_hour=0.02, soc=0.8))

    async def next_assignment(self, count: int) -> ShardAssignment:
        await wait_until(lambda: len(self.assignments) >= count, 15, f"assignment {count} for {self.vid}")
        return self.assignments[count - 1]

    async def shards(self, message: AnyMessage) -> None:
        await self.publish(self.broker.topics.shards(self.vid), message)

    def preemption(self, a: ShardAssignment, *, work: float, checkpoint: float) -> ShardPreempted:
        return ShardPreempted(**self.env(), assignment_id=a.assignment_id, job_id=a.job_id,  # type: ignore[arg-type]
                              shard_id=a.shard_id, checkpoint_tera_ops=checkpoint, checkpoint="forged",
                              work_tera_ops=work, energy_kwh=0.0, reason="owner returned")

    def result(self, a: ShardAssignment, assignment_id: str | None = None) -> ShardResult:
        # the input came with the assignment, so the digest is right: only the time gives it away
        return ShardResult(**self.env(), assignment_id=assignment_id or a.assignment_id, job_id=a.job_id,  # type: ignore[arg-type]
                           shard_id=a.shard_id, result_digest=result_digest(a.input_digest, a.shard_id),
                           work_tera_ops=a.work_tera_ops, energy_kwh=0.0, elapsed_s=a.work_tera_ops / TOPS)


def paid(engine: Engine, vehicle_id: str) -> float:
    return engine.ledger.statement(vehicle_id).tops_hours * 3600.0


async def seen_in_summary(watch: Watcher, reason: str, count: int) -> None:
    """The refusal reaches the control room in the retained FleetSummary."""
    await wait_until(lambda: watch.summary is not None and watch.summary.rejections.get(reason, 0) >= count,
                     10, f"{count} x {reason} in the summary")


Scene = tuple[Engine, Watcher, list[Attacker]]


@contextlib.asynccontextmanager
async def scene(broker: TestBroker, tmp_path: Path, *cars: str) -> AsyncIterator[Scene]:
    async with dispatcher(broker, tmp_path / "ledger.sqlite") as engine, \
            Watcher(broker.url("operator"), broker.topics) as watch, contextlib.AsyncExitStack() as stack:
        attackers = [await stack.enter_async_context(Attacker(broker, vid)) for vid in cars]
        yield engine, watch, attackers


async def test_five_forged_preemptions_of_one_slot_pay_nothing(secure_broker: TestBroker, tmp_path: Path) -> None:
    async with scene(secure_broker, tmp_path, "car-aa") as (engine, watch, (car,)):
        await watch.submit(job_id="job-pre", max_parallel_shards=1, **JOB)
        for n in range(1, 6):
            await car.offer()
            a = await car.next_assignment(n)
            assert a.resume_from_tera_ops == 0.0  # the same slot, from the start, each time
            await car.shards(car.preemption(a, work=SHARD, checkpoint=0.0))  # "did it all, kept nothing"
            await wait_until(lambda n=n: engine.ledger.totals()["preemptions"] == n, 10, f"preemption {n}")
        # before the fix each message paid the rest of the shard: 5 x 3,000,000 tera-ops
        assert paid(engine, "car-aa") == 0.0 and engine.ledger.totals()["work_done"] == 0.0
        assert engine.ledger.db.execute("SELECT paid_work FROM shards").fetchall() == [(0.0,)]
        await wait_until(lambda: watch.summary is not None and watch.summary.preemptions == 5, 10, "the summary")
        assert watch.summary is not None and watch.summary.earnings_gross == 0.0


async def test_preempting_inside_the_clock_slack_and_retaking_is_paid_only_the_time_held(
    secure_broker: TestBroker, tmp_path: Path
) -> None:
    """The slack (1 wall second of the car's rate) keeps honest positions from being refused; a car that
    hands back a checkpoint inside it the moment each shard arrives must be paid no more than its rate over
    the wall time that really passed (before the fix: a whole slack, 300,000 tera-ops, each time)."""
    slack = TOPS * SPEED * 1.0
    async with scene(secure_broker, tmp_path, "car-aa") as (engine, watch, (car,)):
        await watch.submit(job_id="job-slack", max_parallel_shards=1, **JOB)
        started = time.monotonic()
        for n in range(1, 6):
            await car.offer()
            a = await car.next_assignment(n)
            at = a.resume_from_tera_ops + slack * 0.99
            await car.shards(car.preemption(a, work=slack * 0.99, checkpoint=at))
            await wait_until(lambda n=n: engine.ledger.totals()["preemptions"] == n, 10, f"preemption {n}")
        held_s = time.monotonic() - started
        assert paid(engine, "car-aa") <= TOPS * SPEED * held_s  # at most its rate over the time that passed
        assert paid(engine, "car-aa") < 5 * slack * 0.99


async def test_progress_to_the_end_then_offline_pays_only_the_rate(secure_broker: TestBroker, tmp_path: Path) -> None:
    async with scene(secure_broker, tmp_path, "car-aa") as (engine, watch, (car,)):
        await watch.submit(job_id="job-end", max_parallel_shards=1, **JOB)
        await car.offer()
        a = await car.next_assignment(1)
        await car.shards(ShardProgress(**car.env(), assignment_id=a.assignment_id, job_id=a.job_id,  # type: ignore[arg-type]
                                       shard_id=a.shard_id, done_tera_ops=SHARD, checkpoint_tera_ops=SHARD,
                                       checkpoint="the-end"))
        await car.publish(secure_broker.topics.vehicle_status(car.vid),  # what its Will would say
                          VehicleStatus(**car.env(), state=Liveness.OFFLINE), retain=True)  # type: ignore[arg-type]
        await wait_until(lambda: engine.ledger.totals()["preemptions"] == 1, 10, "the loss")
        attempt = engine.ledger.attempt(a.assignment_id)
        assert attempt is not None and attempt.status == "lost" and attempt.checkpoint_tera_ops == 0.0
        assert paid(engine, "car-aa") == 0.0  # before the fix: the whole shard
        assert engine.ledger.rejections()["progress_beyond_rate"] == 1
        await seen_in_summary(watch, "progress_beyond_rate", 1)


async def test_colluding_cars_returning_too_fast_are_refused(secure_broker: TestBroker, tmp_path: Path) -> None:
    async with scene(secure_broker, tmp_path, "car-aa", "car-bb") as (engine, watch, cars):
        await watch.submit(job_id="job-fast", max_parallel_shards=2, redundancy=2, **JOB)
        for car in cars:
            await car.offer()
        got = [await car.next_assignment(1) for car in cars]
        for car, a in zip(cars, got, strict=True):
            await car.shards(car.result(a))  # the right digest, within a second or two of 10 s needed
        await wait_until(lambda: engine.ledger.rejections().get("result_too_fast", 0) == 2, 10, "both refusals")
        assert engine.ledger.totals()["shards_completed"] == 0 and engine.ledger.totals()["work_done"] == 0.0
        for car in cars:
            assert paid(engine, car.vid) == 0.0
            assert engine.ledger.car_record(car.vid)[2] < 0.8 and car.vid in engine.offers.unreliable
        await seen_in_summary(watch, "result_too_fast", 2)


async def test_an_offer_of_a_million_tops_is_refused(secure_broker: TestBroker, tmp_path: Path) -> None:
    async with scene(secure_broker, tmp_path, "car-aa") as (engine, watch, (car,)):
        await car.offer(tops=1_000_000.0, hardware=HardwareGeneration.HW6)
        await seen_in_summary(watch, "offer_beyond_catalogue", 1)
        assert watch.summary is not None and watch.summary.tops_offered == 0.0
        assert "car-aa" not in engine.offers.book
        await wait_until(lambda: engine.ledger.rejections() == {"offer_beyond_catalogue": 1}, 5, "the ledger's count")
        await watch.submit(job_id="job-big", max_parallel_shards=1, **JOB)
        await wait_until(lambda: watch.status("job-big") == "queued", 10, "the job's state")
        await car.offer()  # an honest offer is still taken
        await car.next_assignment(1)
        assert car.assignments[0].allocated_tops == TOPS


async def test_a_result_for_an_assignment_never_made_is_counted(secure_broker: TestBroker, tmp_path: Path) -> None:
    async with scene(secure_broker, tmp_path, "car-aa", "car-bb") as (engine, watch, (car, other)):
        await watch.submit(job_id="job-ghost", max_parallel_shards=1, **JOB)
        await other.offer()
        theirs = await other.next_assignment(1)
        await car.shards(car.result(theirs, assignment_id="a424242-deadbeef"))  # never made
        await car.shards(car.result(theirs))  # car-bb's, sent by car-aa on its own topic
        await seen_in_summary(watch, "unknown_assignment", 1)
        await seen_in_summary(watch, "not_your_assignment", 1)
        assert paid(engine, "car-aa") == 0.0 and engine.ledger.totals()["shards_completed"] == 0
        attempt = engine.ledger.attempt(theirs.assignment_id)
        assert attempt is not None and attempt.status == "active"  # car-bb's work is untouched
        facts = json.loads(watch.summary.model_dump_json()) if watch.summary else {}
        assert facts["messages_rejected"] >= 2


async def test_a_thousand_long_trips_at_one_instant_book_one(secure_broker: TestBroker, tmp_path: Path) -> None:
    async with scene(secure_broker, tmp_path, "car-aa") as (engine, watch, (car,)):
        status = VehicleStatus(**car.env(), state=Liveness.ONLINE, owner_mode=OwnerMode.ROBOTAXI)  # type: ignore[arg-type]
        await car.publish(secure_broker.topics.vehicle_status("car-aa"), status)  # how the dispatcher learns a mode
        await wait_until(lambda: engine.money.modes.get("car-aa") is OwnerMode.ROBOTAXI, 10, "the car's mode")
        for n in range(20):  # the reviewer's attack was 1,000 such trips: 405,250 USD booked
            await car.publish(secure_broker.topics.trips("car-aa"), RobotaxiTrip(
                **car.env(), trip_id=f"t{n}", paid_km=120.0, empty_km=0.0, duration_s=6 * 3600.0,  # type: ignore[arg-type]
                energy_kwh=20.0))
        await seen_in_summary(watch, "trip_overlaps", 19)
        assert engine.ledger.totals()["robotaxi_trips"] == 1 and watch.summary is not None
        assert watch.summary.robotaxi_trips == 1
