"""Job and shard events applied to the ledger, each in one transaction, each at most once.

Positions in a shard (`resume_from`, `done_tera_ops`, `checkpoint_tera_ops`) are absolute
tera-operations from the shard's start; `work_tera_ops` in results and preemptions is the
work one car did in one assignment. No position is believed beyond what the car's allocated
rate allows at that moment (`dispatcher.credit`), and a car that stops before the end is paid
for the work it hands over, up to its checkpoint.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from dispatcher import jobs
from dispatcher.credit import Moment, reachable, reached_estimate, within
from dispatcher.ledger import Attempt, Ledger, add_total, charge_energy, count_rejection, ensure_car, pay_for_shard
from protocol.job_messages import JobSubmission, ShardPreempted

OPEN = ("queued", "running")


@dataclass(frozen=True, slots=True)
class Slot:
    """A replica line of a shard that waits for a car."""

    slot_id: int
    job_id: str
    shard_id: str
    resume_from: float
    checkpoint: str
    work: float
    input_digest: str


@dataclass(frozen=True, slots=True)
class OpenJob:
    job_id: str
    submission: JobSubmission
    status: str
    deadline_s: float | None


def add_job(ledger: Ledger, job: JobSubmission, deadline_s: float | None) -> bool:
    """Record a new job with its shards and replica slots; False if the id is taken.

    The id of a rejected job may be used again: the corrected job replaces the rejection.
    """
    with ledger.transaction() as db:
        db.execute("DELETE FROM jobs WHERE job_id = ? AND status = 'rejected'", (job.job_id,))
        if db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job.job_id,)).fetchone():
            return False
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
        db.execute(
            "INSERT INTO jobs(job_id, seq, submission, status, deadline_s, priority) VALUES (?, ?, ?, 'queued', ?, ?)",
            (job.job_id, seq, job.model_dump_json(), deadline_s, job.priority),
        )
        work = jobs.shard_work(job)
        for shard_id in jobs.shard_ids(job):
            db.execute("INSERT INTO shards(job_id, shard_id, work, input_digest) VALUES (?, ?, ?, ?)",
                       (job.job_id, shard_id, work, jobs.new_input_digest()))
            db.executemany(
                "INSERT INTO slots(job_id, shard_id) VALUES (?, ?)", [(job.job_id, shard_id)] * job.redundancy
            )
    return True


def record_rejection(ledger: Ledger, job_id: str, name: str, reason: str) -> bool:
    """Keep a rejected job (so its state survives a restart); False if a real job has the id."""
    with ledger.transaction() as db:
        if db.execute("SELECT 1 FROM jobs WHERE job_id = ? AND status != 'rejected'", (job_id,)).fetchone():
            return False
        db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
        db.execute(
            "INSERT INTO jobs(job_id, seq, submission, status, reason) VALUES (?, ?, ?, 'rejected', ?)",
            (job_id, seq, name, reason),
        )
    return True


def open_jobs(ledger: Ledger) -> list[OpenJob]:
    """Queued and running jobs in the order cars rank them: priority, then price cap, then age."""
    rows = ledger.db.execute(
        "SELECT job_id, submission, status, deadline_s FROM jobs WHERE status IN ('queued', 'running')"
        " ORDER BY priority DESC, seq"
    )
    found = [OpenJob(j, JobSubmission.model_validate_json(s), st, d) for j, s, st, d in rows]
    found.sort(key=lambda job: (-job.submission.priority, -(job.submission.price_cap_per_tops_hour or 1e18)))
    return found


def waiting_slots(ledger: Ledger, job_id: str, limit: int) -> list[Slot]:
    rows = ledger.db.execute(
        "SELECT sl.slot_id, sl.job_id, sl.shard_id, sl.resume_from, sl.checkpoint, sh.work, sh.input_digest"
        " FROM slots sl JOIN shards sh USING(job_id, shard_id)"
        " WHERE sl.job_id = ? AND sl.status = 'waiting' ORDER BY sl.slot_id LIMIT ?",
        (job_id, limit),
    )
    return [Slot(*row) for row in rows]


def running_count(ledger: Ledger, job_id: str) -> int:
    return int(ledger.scalar("SELECT COUNT(*) FROM slots WHERE job_id = ? AND status = 'running'", job_id))


def shard_cars(ledger: Ledger, job_id: str, shard_id: str) -> set[str]:
    """Cars that already ran (or run) this shard, or had a result for it refused: a replica goes elsewhere."""
    rows = ledger.db.execute(
        "SELECT vehicle_id FROM assignments WHERE job_id = ? AND shard_id = ?"
        " AND status IN ('active', 'done', 'rejected')",
        (job_id, shard_id),
    )
    return {str(r[0]) for r in rows}


def start_attempt(
    ledger: Ledger, assignment_id: str, slot: Slot, car: tuple[str, str], tops: float, price: float, now_s: float
) -> None:
    """Record that `car` (vehicle id, owner id) runs `slot` at `tops` from `now_s` on."""
    vehicle_id, owner_id = car
    with ledger.transaction() as db:
        ensure_car(db, vehicle_id, owner_id)
        db.execute(
            "INSERT INTO assignments(assignment_id, slot_id, job_id, shard_id, vehicle_id, allocated_tops, price,"
            " resume_from, done_tera_ops, checkpoint_tera_ops, checkpoint, assigned_at, heard_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (assignment_id, slot.slot_id, slot.job_id, slot.shard_id, vehicle_id, tops, price,
             slot.resume_from, slot.resume_from, slot.resume_from, slot.checkpoint, now_s, now_s),
        )
        db.execute("UPDATE slots SET status = 'running', vehicle_id = ? WHERE slot_id = ?", (vehicle_id, slot.slot_id))
        db.execute("UPDATE jobs SET status = 'running' WHERE job_id = ? AND status = 'queued'", (slot.job_id,))


def active(ledger: Ledger, assignment_id: str) -> Attempt | None:
    attempt = ledger.attempt(assignment_id)
    return attempt if attempt is not None and attempt.status == "active" else None


def on_progress(ledger: Ledger, assignment_id: str, done: float, checkpoint_at: float, checkpoint: str,
                at: Moment) -> bool:
    """Keep the furthest progress and checkpoint of an active assignment that its rate allows; True if applied.

    A position past the shard's end is clamped to it; one past the car's rate is refused (its
    progress is held at the rate, its checkpoint is not taken) and counted.
    """
    with ledger.transaction() as db:
        attempt = active(ledger, assignment_id)
        if attempt is None:
            return False
        limit = reachable(attempt, at)
        done, checkpoint_at = min(done, attempt.shard_work), min(checkpoint_at, attempt.shard_work)
        if not (within(done, limit) and within(checkpoint_at, limit)):
            count_rejection(db, "progress_beyond_rate")
        if not within(checkpoint_at, limit) or checkpoint_at <= attempt.checkpoint_tera_ops:
            checkpoint_at, checkpoint = attempt.checkpoint_tera_ops, attempt.checkpoint
        db.execute(
            "UPDATE assignments SET done_tera_ops = ?, checkpoint_tera_ops = ?, checkpoint = ?,"
            " heard_at = MAX(heard_at, ?) WHERE assignment_id = ?",
            (max(attempt.done_tera_ops, min(done, limit)), checkpoint_at, checkpoint, at.now_s, assignment_id),
        )
        return True


def _reopen_slot(db: sqlite3.Connection, attempt: Attempt, checkpoint_at: float, checkpoint: str) -> None:
    db.execute(
        "UPDATE slots SET status = 'waiting', resume_from = ?, checkpoint = ?, vehicle_id = NULL"
        " WHERE slot_id = ? AND status = 'running'",
        (max(attempt.resume_from, checkpoint_at), checkpoint, attempt.slot_id),
    )


def _count_preemption(db: sqlite3.Connection, job_id: str, redone: float) -> None:
    db.execute("UPDATE jobs SET preemptions = preemptions + 1, redone = redone + ? WHERE job_id = ?", (redone, job_id))
    add_total(db, "preemptions", 1)
    add_total(db, "redone", redone)


def _handed_back(db: sqlite3.Connection, attempt: Attempt, message: ShardPreempted, limit: float) -> tuple[float, str]:
    """The checkpoint a preemption hands back, if the car's rate allows it; else the last one reported."""
    claimed = min(message.checkpoint_tera_ops, attempt.shard_work)
    if not within(claimed, limit):
        count_rejection(db, "preemption_beyond_rate")
    elif claimed > attempt.checkpoint_tera_ops:
        return claimed, message.checkpoint
    return attempt.checkpoint_tera_ops, attempt.checkpoint


def on_preempted(ledger: Ledger, message: ShardPreempted, energy_price: float, at: Moment) -> Attempt | None:
    """A car handed back a shard with its checkpoint: pay the work it hands over, reopen the slot from there.

    Work past the checkpoint is lost (redone by the next car) and is counted, not paid: so a car
    that takes a slot again and again is paid at most once for each stretch of the shard.
    """
    with ledger.transaction() as db:
        attempt = active(ledger, message.assignment_id)
        if attempt is None:
            return None
        limit = reachable(attempt, at)
        checkpoint_at, checkpoint = _handed_back(db, attempt, message, limit)
        kept = max(0.0, min(message.work_tera_ops, checkpoint_at - attempt.resume_from))
        paid = pay_for_shard(db, attempt.job_id, attempt.shard_id, attempt.vehicle_id, kept, attempt.price)
        reached = min(limit, max(attempt.done_tera_ops, checkpoint_at, attempt.resume_from + message.work_tera_ops))
        db.execute(
            "UPDATE assignments SET status = 'preempted', work_tera_ops = ?, energy_kwh = ?, paid = 1,"
            " checkpoint_tera_ops = ?, checkpoint = ?, heard_at = MAX(heard_at, ?) WHERE assignment_id = ?",
            (paid, message.energy_kwh, checkpoint_at, checkpoint, at.now_s, attempt.assignment_id),
        )
        _reopen_slot(db, attempt, checkpoint_at, checkpoint)
        charge_energy(db, attempt.vehicle_id, message.energy_kwh, energy_price)
        _count_preemption(db, attempt.job_id, max(0.0, reached - checkpoint_at))
    return attempt


def on_lost(ledger: Ledger, assignment_id: str, status: str, *, preemption: bool,
            last_heard_s: float | None = None) -> Attempt | None:
    """An assignment ended without a word (car vanished, refused, fell silent): reopen its slot.

    A lost car is paid up to its last checkpoint; the work it probably did past it (its last
    report, or its rate up to when it was last heard) is what the next car redoes.
    """
    with ledger.transaction() as db:
        attempt = active(ledger, assignment_id)
        if attempt is None:
            return None
        useful = max(0.0, attempt.checkpoint_tera_ops - attempt.resume_from)
        paid = 0.0
        if preemption:
            paid = pay_for_shard(db, attempt.job_id, attempt.shard_id, attempt.vehicle_id, useful, attempt.price)
            heard = max(attempt.heard_at, last_heard_s if last_heard_s is not None else attempt.heard_at)
            _count_preemption(db, attempt.job_id,
                              max(0.0, reached_estimate(attempt, heard) - attempt.checkpoint_tera_ops))
        db.execute("UPDATE assignments SET status = ?, work_tera_ops = ?, paid = 1 WHERE assignment_id = ?",
                   (status, paid, assignment_id))
        _reopen_slot(db, attempt, attempt.checkpoint_tera_ops, attempt.checkpoint)
    return attempt


def end_job(ledger: Ledger, job_id: str, status: str, reason: str) -> list[Attempt]:
    """Cancel or fail a job: its waiting and running slots are abandoned; returns attempts to withdraw."""
    with ledger.transaction() as db:
        return end_job_in(db, ledger, job_id, status, reason)


def end_job_in(db: sqlite3.Connection, ledger: Ledger, job_id: str, status: str, reason: str) -> list[Attempt]:
    rows = db.execute("SELECT assignment_id FROM assignments WHERE job_id = ? AND status = 'active'", (job_id,))
    attempts = [a for (aid,) in rows.fetchall() if (a := ledger.attempt(str(aid))) is not None]
    db.execute("UPDATE assignments SET status = 'cancelled' WHERE job_id = ? AND status = 'active'", (job_id,))
    db.execute("UPDATE slots SET status = 'abandoned' WHERE job_id = ? AND status IN ('waiting', 'running')", (job_id,))
    db.execute("UPDATE jobs SET status = ?, reason = ? WHERE job_id = ? AND status IN ('queued', 'running')",
               (status, reason, job_id))
    return attempts


