"""The ledger pays only for work that can have been done: each rule on the engine, no broker.

A 5,000-TOPS car and shards of 3,000,000 tera-ops: a shard needs 600 simulated seconds, that
is 10 wall seconds of the manual clock at 60x; the clock slack granted to cars is 1 wall
second (60 simulated seconds, 300,000 tera-ops).
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.credit import CLOCK_SLACK_WALL_S
from dispatcher.engine import Engine
from dispatcher.ledger import Ledger
from dispatcher.ledger.accounts import pay_for_shard
from fake_vehicles.catalogue import HARDWARE
from protocol import (
    ComputeOffer,
    HardwareGeneration,
    JobSubmission,
    Liveness,
    ShardAssignment,
    ShardPreempted,
    ShardProgress,
    ShardResult,
    Topics,
    VehicleStatus,
    VehicleTelemetry,
    decode,
    encode,
)
from protocol.clock import ManualClock
from protocol.job_messages import result_digest
from protocol.power import compute_kw
from protocol.vehicle_messages import HARDWARE_TOPS
from tests.support.samples import telemetry

T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)
SPEED = 60.0
TOPS = 5000.0
SHARD = 3_000_000.0  # 600 simulated seconds at 5,000 TOPS
SLACK_TERA_OPS = TOPS * CLOCK_SLACK_WALL_S * SPEED


class Money:
    """An engine on a manual clock (60 simulated seconds per wall second) with every result spot-checked."""

    def __init__(self, path: Path, *, sim_shift_s: float = 0.0, wall_start: float = 0.0) -> None:
        self.topics = Topics("money")
        self.wall = ManualClock(wall_start)
        self.sim_shift_s = sim_shift_s
        self.ledger = Ledger(path)
        self.engine = Engine(self.topics, self.ledger, sim_now=self.sim_now, wall=self.wall, rng=random.Random(3),
                             speed=SPEED, heartbeat_timeout_s=100.0, spot_check_rate=1.0,
                             unix=lambda: 1.8e9 + self.wall.t)

    def sim_now(self) -> datetime:
        return T0 + timedelta(seconds=self.wall.t * SPEED + self.sim_shift_s)

    def env(self, sender: str) -> dict[str, object]:
        return {"sender": sender, "sent_at": T0, "sim_time": self.sim_now()}

    def send(self, topic: str, message: object) -> list[object]:
        raw = message if isinstance(message, bytes) else encode(message)  # type: ignore[arg-type]
        return [decode(o.payload) for o in self.engine.handle(topic, raw)]

    def car(self, vid: str, hw: HardwareGeneration = HardwareGeneration.HW5, tops: float = TOPS) -> list[object]:
        self.send(self.topics.vehicle_status(vid), VehicleStatus(**self.env(vid), state=Liveness.ONLINE, hardware=hw))
        return self.offer(vid, hw, tops)

    def offer(self, vid: str, hw: HardwareGeneration = HardwareGeneration.HW5, tops: float = TOPS) -> list[object]:
        return self.send(self.topics.offer(vid), ComputeOffer(
            **self.env(vid), offer_id="o1", hardware=hw, free_tops=tops, energy_budget_kwh=10.0,
            expected_departure=self.sim_now() + timedelta(hours=8), departure_confidence=0.9,
            price_per_tops_hour=0.02, soc=0.8))

    def job(self, job_id: str = "job-1", shards: int = 1, redundancy: int = 1) -> None:
        job = JobSubmission.model_validate({
            **self.env("operator"), "job_id": job_id, "name": "j", "total_work_tera_ops": SHARD * shards,
            "shards": shards, "min_tops_per_car": 100.0, "max_parallel_shards": shards * redundancy,
            "redundancy": redundancy, "checkpoint_interval_s": 60.0})
        self.send(self.topics.job_submit, job)

    def assign(self) -> list[ShardAssignment]:
        return [m for m in (decode(o.payload) for o in self.engine.tick()) if isinstance(m, ShardAssignment)]

    def later(self, wall_s: float) -> None:
        self.wall.advance(wall_s)

    def progress(self, a: ShardAssignment, done: float, checkpoint: float | None = None) -> None:
        at = done if checkpoint is None else checkpoint
        self.send(self.topics.shards(a.vehicle_id), ShardProgress(
            **self.env(a.vehicle_id), assignment_id=a.assignment_id, job_id=a.job_id, shard_id=a.shard_id,  # type: ignore[arg-type]
            done_tera_ops=done, checkpoint_tera_ops=at, checkpoint=f"ckpt:{at:.0f}"))

    def preempt(self, a: ShardAssignment, work: float, checkpoint: float, sender: str | None = None) -> None:
        vid = sender or a.vehicle_id
        self.send(self.topics.shards(vid), ShardPreempted(
            **self.env(vid), assignment_id=a.assignment_id, job_id=a.job_id, shard_id=a.shard_id,  # type: ignore[arg-type]
            checkpoint_tera_ops=checkpoint, checkpoint=f"ckpt:{checkpoint:.0f}", work_tera_ops=work,
            energy_kwh=0.0, reason="owner returned"))

    def result(self, a: ShardAssignment, digest: str | None = None, sender: str | None = None) -> list[object]:
        vid = sender or a.vehicle_id
        return self.send(self.topics.shards(vid), ShardResult(
            **self.env(vid), assignment_id=a.assignment_id, job_id=a.job_id, shard_id=a.shard_id,  # type: ignore[arg-type]
            result_digest=digest or result_digest(a.input_digest, a.shard_id),
            work_tera_ops=a.work_tera_ops - a.resume_from_tera_ops, energy_kwh=0.01, elapsed_s=1.0))

    def paid(self, vid: str) -> float:
        return self.ledger.statement(vid).tops_hours * 3600.0

    def rejections(self) -> dict[str, int]:
        return dict(self.engine.summary().rejections)


@pytest.fixture
def m(tmp_path: Path) -> Money:
    return Money(tmp_path / "ledger.sqlite")


# 1. positions at most the allocated rate since the assignment -------------------------------
def test_progress_is_held_to_the_cars_rate_and_a_checkpoint_beyond_it_is_not_taken(m: Money) -> None:
    m.car("car-a")
    m.job()
    (a,) = m.assign()
    m.progress(a, SHARD)  # at once: "done, checkpoint at the end"
    attempt = m.ledger.attempt(a.assignment_id)
    assert attempt is not None
    assert attempt.done_tera_ops == pytest.approx(SLACK_TERA_OPS)  # held to the rate (plus the slack)
    assert attempt.checkpoint_tera_ops == 0.0 and attempt.checkpoint == ""  # an impossible checkpoint is not taken
    assert m.rejections() == {"progress_beyond_rate": 1}
    m.later(2.0)  # 120 simulated seconds: an honest car is at 600,000
    m.progress(a, 600_000.0)
    attempt = m.ledger.attempt(a.assignment_id)
    assert attempt is not None and attempt.checkpoint_tera_ops == 600_000.0 and attempt.assigned_at == T0.timestamp()
    assert m.rejections() == {"progress_beyond_rate": 1}  # honest progress is not refused


# 2. a preemption pays the work handed over, once, within the rate ---------------------------
def test_five_forged_preemptions_of_one_slot_pay_nothing(m: Money) -> None:
    m.car("car-a")
    m.job()
    for _ in range(5):
        (a,) = m.assign()
        assert a.vehicle_id == "car-a" and a.resume_from_tera_ops == 0.0
        m.preempt(a, work=SHARD, checkpoint=0.0)  # "did the whole shard, kept nothing"
        m.offer("car-a")
    assert m.paid("car-a") == 0.0 and m.ledger.totals()["work_done"] == 0.0
    assert m.engine.summary().preemptions == 5


def test_preempting_at_once_and_taking_the_shard_again_is_never_paid_the_clock_slack(m: Money) -> None:
    """The clock slack lets an honest car's positions run a little ahead of the dispatcher's clock;
    it is never paid: a car that hands back a checkpoint at the slack the moment it gets a shard,
    ten times over, would otherwise be paid the whole shard in no time at all."""
    m.car("car-a")
    m.job()
    for _ in range(10):
        (a,) = m.assign()
        resume = a.resume_from_tera_ops
        m.preempt(a, work=SLACK_TERA_OPS, checkpoint=resume + SLACK_TERA_OPS)  # within the slack: believed
        m.offer("car-a")
    assert m.paid("car-a") == 0.0 and m.ledger.totals()["work_done"] == 0.0


def test_progress_at_the_slack_then_silence_pays_nothing(m: Money) -> None:
    m.car("car-a")
    m.job()
    (a,) = m.assign()
    m.progress(a, SLACK_TERA_OPS, SLACK_TERA_OPS)  # at once, within the slack: the checkpoint is kept ...
    gone = VehicleStatus(**m.env("car-a"), state=Liveness.OFFLINE, hardware=HardwareGeneration.HW5)
    m.send(m.topics.vehicle_status("car-a"), gone)  # ... and the car is gone
    assert m.paid("car-a") == 0.0  # ... but no time passed in which to do that work


def test_a_result_claiming_huge_work_does_not_forge_the_throughput(m: Money) -> None:
    m.car("car-a")
    m.job()
    (a,) = m.assign()
    m.later(SHARD / TOPS / 60.0 + 0.1)  # honest timing: the shard takes 600 simulated seconds
    vid = a.vehicle_id
    m.send(m.topics.shards(vid), ShardResult(
        **m.env(vid), assignment_id=a.assignment_id, job_id=a.job_id, shard_id=a.shard_id,  # type: ignore[arg-type]
        result_digest=result_digest(a.input_digest, a.shard_id), work_tera_ops=1e18, energy_kwh=0.01, elapsed_s=600.0))
    assert m.engine.summary().throughput_tops <= SHARD  # at most the shard's work over a window of seconds


def test_preemptions_claiming_the_end_are_refused_and_the_shard_never_pays_more_than_its_work(m: Money) -> None:
    m.car("car-a")
    m.job()
    for _ in range(5):
        (a,) = m.assign()
        m.later(0.5)
        m.preempt(a, work=SHARD, checkpoint=SHARD)
        m.offer("car-a")
    assert m.paid("car-a") == 0.0
    assert m.rejections() == {"preemption_beyond_rate": 5}


def test_an_honest_preemption_is_paid_to_its_checkpoint_and_the_rest_counts_as_redone(m: Money) -> None:
    m.car("car-a")
    m.job()
    (a,) = m.assign()
    m.later(2.0)
    m.progress(a, 600_000.0)
    m.later(1.0)
    m.progress(a, 900_000.0, checkpoint=600_000.0)
    m.preempt(a, work=900_000.0, checkpoint=600_000.0)
    assert m.paid("car-a") == pytest.approx(600_000.0)
    summary = m.engine.summary()
    assert summary.preemptions == 1 and summary.redone_tera_ops == pytest.approx(300_000.0)
    m.car("car-b")
    (b,) = m.assign()
    assert b.resume_from_tera_ops == 600_000.0 and b.checkpoint == "ckpt:600000"
    assert m.rejections() == {}


# 3. a checkpoint at the end, then silence ---------------------------------------------------
def test_progress_to_the_end_then_silence_pays_only_what_the_rate_allowed(m: Money) -> None:
    m.car("car-a")
    m.job()
    (a,) = m.assign()
    m.later(1.0)
    m.progress(a, SHARD)  # at 60 s, with the slack the car can be at 600,000
    m.later(200.0)  # silent far beyond the silence limit and the heartbeat timeout
    m.car("car-b")
    m.engine.tick()
    assert m.engine.summary().preemptions == 1
    assert m.paid("car-a") == 0.0  # its only checkpoint was impossible: nothing handed over
    assert m.rejections() == {"progress_beyond_rate": 1}


# 4. results faster than the rate, and spot checks ---------------------------------------------
def test_two_colluding_cars_returning_at_once_are_refused_and_lose_reliability(m: Money) -> None:
    m.car("car-a")
    m.car("car-b")
    m.job(redundancy=2)
    first, second = m.assign()
    m.later(2.5 / SPEED)  # 2.5 simulated seconds for a shard that needs 600
    for a in (first, second):
        m.result(a, digest="ab" * 32)  # they agree with each other
    summary = m.engine.summary()
    assert summary.shards_completed == 0 and summary.earnings_gross == 0.0 and summary.work_done_tera_ops == 0.0
    assert summary.rejections == {"result_too_fast": 2}
    for vid in ("car-a", "car-b"):
        valid, wrong, reliability = m.ledger.car_record(vid)
        assert (valid, wrong, reliability) == (0, 1, 0.5)
        assert vid in m.engine.offers.unreliable
    assert len(m.ledger.waiting_slots("job-1", limit=10)) == 2  # the shard runs again


def test_a_result_at_the_cars_rate_is_accepted(m: Money) -> None:
    m.car("car-a")
    m.car("car-b")
    m.job(redundancy=2)
    first, second = m.assign()
    m.later(600.0 / SPEED - CLOCK_SLACK_WALL_S / 2)  # a little early: the fleet's tick stamps it early
    for a in (first, second):
        m.result(a)
    summary = m.engine.summary()
    assert summary.shards_completed == 1 and summary.work_done_tera_ops == 2 * SHARD and summary.rejections == {}


def test_a_wrong_spot_checked_result_is_refused_without_a_vote(m: Money) -> None:
    m.car("car-a")
    m.car("car-b")
    m.job(redundancy=2)
    first, second = m.assign()
    m.later(11.0)
    m.result(first, digest="cd" * 32)
    summary = m.engine.summary()
    assert summary.rejections == {"spot_check_failed": 1} and summary.wrong_results_caught == 1
    assert m.ledger.car_record(first.vehicle_id)[1:] == (1, 0.5) and first.vehicle_id in m.engine.offers.unreliable
    m.result(second)
    assert m.engine.summary().shards_completed == 0  # one good vote of two: the first slot runs again
    m.car("car-c")
    (third,) = m.assign()
    assert third.vehicle_id == "car-c" and third.shard_id == first.shard_id
    m.later(11.0)
    m.result(third)
    assert m.engine.summary().shards_completed == 1 and m.paid(first.vehicle_id) == 0.0


def test_shard_inputs_are_secret_random_values_kept_across_a_restart(tmp_path: Path) -> None:
    first = Money(tmp_path / "l.sqlite")
    first.car("car-a")
    first.car("car-b")
    first.job(shards=2)
    a, b = first.assign()
    public = hashlib.sha256(f"job-1:0:{a.shard_id}".encode()).hexdigest()[:32]  # the old, guessable input
    assert a.input_digest != public and a.input_digest != b.input_digest and len(a.input_digest) == 32
    first.ledger.close()
    again = Money(tmp_path / "l.sqlite")
    stored = again.ledger.db.execute("SELECT input_digest FROM shards WHERE shard_id = ?", (a.shard_id,)).fetchall()
    assert stored == [(a.input_digest,)]


def test_the_honest_result_has_one_definition_for_both_sides() -> None:
    import fake_vehicles.work as car_side

    assert car_side.result_digest is result_digest
    assert result_digest("ab" * 16, "s0001") == hashlib.sha256(f"{'ab' * 16}:s0001".encode()).hexdigest()


# 5. claims outside the catalogue --------------------------------------------------------------
def test_offers_beyond_the_catalogue_are_refused_and_counted(m: Money) -> None:
    m.car("car-big", HardwareGeneration.HW6, tops=1_000_000.0)
    m.car("car-hw3", HardwareGeneration.HW3, tops=5000.0)
    m.car("car-ok", HardwareGeneration.HW5)
    m.offer("car-ok", HardwareGeneration.HW6, tops=20_000.0)  # a HW5 car claiming to be a HW6
    big = VehicleTelemetry(**{**telemetry("car-ok").model_dump(), "sim_time": m.sim_now(), "rated_tops": 1e6})
    m.send(m.topics.telemetry("car-ok"), big)
    book = m.engine.offers.book
    assert set(book.offers) == {"car-ok"} and book.tops_offered == TOPS
    catalogue = sum(HARDWARE_TOPS[g] for g in HardwareGeneration if g != "HW4")  # the three cars, whatever they claim
    assert m.engine.summary().tops_total == catalogue
    assert m.rejections() == {"offer_beyond_catalogue": 2, "offer_hardware_mismatch": 1,
                              "telemetry_beyond_catalogue": 1}
    m.engine.tick()  # written to the ledger: they survive a restart
    assert m.ledger.rejections() == m.rejections()


def test_telemetry_claiming_more_power_than_the_model_is_refused_and_not_metered(m: Money) -> None:
    m.car("car-ok")
    sample = {**telemetry("car-ok").model_dump(), "sim_time": m.sim_now(), "tops_in_use": 2500.0}
    honest_kw = compute_kw(HardwareGeneration.HW5, 2500.0)
    m.send(m.topics.telemetry("car-ok"), VehicleTelemetry(**{**sample, "compute_power_kw": honest_kw}))
    m.send(m.topics.telemetry("car-ok"), VehicleTelemetry(**{**sample, "compute_power_kw": 10_000.0}))
    assert m.rejections() == {"power_beyond_model": 1}
    assert m.engine.summary().compute_power_kw <= honest_kw * 1.05


def test_the_fleet_catalogue_takes_its_tops_from_the_protocol_table() -> None:
    assert {g: hw.tops for g, hw in HARDWARE.items()} == HARDWARE_TOPS
    assert max(HARDWARE_TOPS.values()) == 20_000.0


# 6. messages about assignments never made, or not the sender's -------------------------------
def test_results_for_unknown_or_foreign_assignments_are_counted(m: Money) -> None:
    m.car("car-a")
    m.car("car-b")
    m.job()
    (a,) = m.assign()
    other = "car-b" if a.vehicle_id == "car-a" else "car-a"
    m.later(11.0)
    never = a.model_copy(update={"assignment_id": "a999-deadbeef"})
    m.result(never)
    m.result(a, sender=other)
    m.preempt(a, work=1.0, checkpoint=1.0, sender=other)
    m.result(a.model_copy(update={"shard_id": "s9999"}))
    assert m.rejections() == {"unknown_assignment": 1, "not_your_assignment": 2, "assignment_mismatch": 1}
    assert m.engine.summary().messages_rejected == 4
    m.result(a)
    m.result(a)  # a QoS 1 duplicate of its own settled result: not a refusal
    attempt = m.ledger.attempt(a.assignment_id)
    assert attempt is not None and attempt.status == "done" and m.engine.summary().messages_rejected == 4


# 7. what a vanished car's lost work cost ------------------------------------------------------
def test_redone_counts_the_work_a_vanished_car_probably_did_past_its_checkpoint(m: Money) -> None:
    m.car("car-a")
    m.job()
    (a,) = m.assign()
    m.later(1.0)
    m.progress(a, 300_000.0)  # checkpoint at 60 s
    m.later(1.0)
    m.send(m.topics.vehicle_status("car-a"), VehicleStatus(**m.env("car-a"), state=Liveness.ONLINE))  # at 120 s
    m.later(1.0)
    m.send(m.topics.vehicle_status("car-a"), VehicleStatus(**m.env("car-a"), state=Liveness.OFFLINE))
    summary = m.engine.summary()
    assert summary.preemptions == 1
    assert summary.redone_tera_ops == pytest.approx(TOPS * 120.0 - 300_000.0)  # rate up to 120 s, minus the checkpoint
    assert m.paid("car-a") == pytest.approx(300_000.0)


# the ledger's own bounds ----------------------------------------------------------------------
def test_a_shard_never_pays_more_than_its_work_times_its_replicas(m: Money) -> None:
    m.car("car-a")
    m.job(redundancy=2)
    m.engine.tick()
    with m.ledger.transaction() as db:
        paid = [pay_for_shard(db, "job-1", "s0000", "car-a", SHARD, 0.02) for _ in range(3)]
    assert paid == [SHARD, SHARD, 0.0]
    assert m.ledger.totals()["work_done"] == 2 * SHARD and m.ledger.rejections() == {"shard_pay_cap": 1}


def test_a_restart_without_a_shared_epoch_continues_the_ledgers_clock(tmp_path: Path) -> None:
    first = Money(tmp_path / "l.sqlite")
    first.car("car-a")
    first.job()
    (a,) = first.assign()
    first.later(5.0)
    first.engine.tick()  # records the clock
    first.ledger.close()
    # restarted 2 wall seconds later with a clock that starts again from its origin, an hour behind
    again = Money(tmp_path / "l.sqlite", sim_shift_s=-3600.0, wall_start=7.0)
    again.engine.startup()
    assert again.engine.clock.now_s == pytest.approx(T0.timestamp() + 7.0 * SPEED)
    again.later(3.5)  # 630 simulated seconds after the assignment, on the car's clock
    again.result(a)
    attempt = again.ledger.attempt(a.assignment_id)
    assert again.rejections() == {} and attempt is not None and attempt.status == "done"  # a vote, not too fast
