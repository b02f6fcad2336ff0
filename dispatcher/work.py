"""Job and shard events applied to the ledger, each in one transaction, each at most once.

Positions in a shard (`resume_from`, `done_tera_ops`, `checkpoint_tera_ops`) are absolute
tera-operations from the shard's start; `work_tera_ops` in results and preemptions is the
work one car did in one assignment.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from dispatcher import jobs
from dispatcher.ledger import Attempt, Ledger, add_total, charge_energy, ensure_car, pay
from protocol.job_messages import JobSubmission, ShardPreempted, ShardResult

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


@dataclass(slots=True)
class Outcome:
    """What an event changed, for the engine to publish."""

    attempt: Attempt | None = None
    to_cancel: list[Attempt] = field(default_factory=list)
    wrong_cars: list[str] = field(default_factory=list)
    job_finished: bool = False


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
            digest = jobs.input_digest(job.job_id, job.input_seed, shard_id)
            db.execute("INSERT INTO shards VALUES (?, ?, ?, ?, 'open', NULL)", (job.job_id, shard_id, work, digest))
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
    """Cars that already ran (or run) this shard: a replica must go to another car."""
    rows = ledger.db.execute(
        "SELECT vehicle_id FROM assignments WHERE job_id = ? AND shard_id = ? AND status IN ('active', 'done')",
        (job_id, shard_id),
    )
    return {str(r[0]) for r in rows}


def start_attempt(
    ledger: Ledger, assignment_id: str, slot: Slot, vehicle_id: str, owner_id: str, tops: float, price: float
) -> None:
    with ledger.transaction() as db:
        ensure_car(db, vehicle_id, owner_id)
        db.execute(
            "INSERT INTO assignments(assignment_id, slot_id, job_id, shard_id, vehicle_id, allocated_tops, price,"
            " resume_from, done_tera_ops, checkpoint_tera_ops, checkpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (assignment_id, slot.slot_id, slot.job_id, slot.shard_id, vehicle_id, tops, price,
             slot.resume_from, slot.resume_from, slot.resume_from, slot.checkpoint),
        )
        db.execute("UPDATE slots SET status = 'running', vehicle_id = ? WHERE slot_id = ?", (vehicle_id, slot.slot_id))
        db.execute("UPDATE jobs SET status = 'running' WHERE job_id = ? AND status = 'queued'", (slot.job_id,))


def _active(db: sqlite3.Connection, ledger: Ledger, assignment_id: str) -> Attempt | None:
    attempt = ledger.attempt(assignment_id)
    return attempt if attempt is not None and attempt.status == "active" else None


def on_progress(ledger: Ledger, assignment_id: str, done: float, checkpoint_at: float, checkpoint: str) -> bool:
    """Keep the furthest progress and checkpoint of an active assignment; True if it moved."""
    with ledger.transaction() as db:
        # one statement: positions past the shard's end are clamped to it (s.work)
        cur = db.execute(
            "UPDATE assignments SET done_tera_ops = MAX(done_tera_ops, MIN(:done, s.work)),"
            " checkpoint = CASE WHEN MIN(:at, s.work) > checkpoint_tera_ops THEN :ckpt ELSE checkpoint END,"
            " checkpoint_tera_ops = MAX(checkpoint_tera_ops, MIN(:at, s.work))"
            " FROM shards s WHERE s.job_id = assignments.job_id AND s.shard_id = assignments.shard_id"
            " AND assignment_id = :aid AND assignments.status = 'active'",
            {"done": done, "at": checkpoint_at, "ckpt": checkpoint, "aid": assignment_id},
        )
        return cur.rowcount > 0


def _reopen_slot(db: sqlite3.Connection, attempt: Attempt, checkpoint_at: float, checkpoint: str) -> None:
    resume = max(attempt.resume_from, checkpoint_at)
    keep = checkpoint if checkpoint_at >= attempt.checkpoint_tera_ops else attempt.checkpoint
    db.execute(
        "UPDATE slots SET status = 'waiting', resume_from = ?, checkpoint = ?, vehicle_id = NULL"
        " WHERE slot_id = ? AND status = 'running'",
        (resume, keep, attempt.slot_id),
    )


def _count_preemption(db: sqlite3.Connection, job_id: str, redone: float) -> None:
    db.execute("UPDATE jobs SET preemptions = preemptions + 1, redone = redone + ? WHERE job_id = ?", (redone, job_id))
    add_total(db, "preemptions", 1)
    add_total(db, "redone", redone)


def on_preempted(ledger: Ledger, message: ShardPreempted, energy_price: float) -> Attempt | None:
    """A car handed back a shard with its checkpoint: pay its work, reopen the slot from there."""
    with ledger.transaction() as db:
        attempt = _active(db, ledger, message.assignment_id)
        if attempt is None:
            return None
        shard_work = _shard_work(db, attempt)
        checkpoint_at = max(attempt.checkpoint_tera_ops, min(message.checkpoint_tera_ops, shard_work))
        claimed = _payable(message.work_tera_ops, shard_work, attempt)
        reached = max(attempt.done_tera_ops, attempt.resume_from + claimed)
        db.execute(
            "UPDATE assignments SET status = 'preempted', work_tera_ops = ?, energy_kwh = ?, paid = 1"
            " WHERE assignment_id = ?",
            (claimed, message.energy_kwh, attempt.assignment_id),
        )
        _reopen_slot(db, attempt, checkpoint_at, message.checkpoint)
        pay(db, attempt.job_id, attempt.vehicle_id, claimed, attempt.price)
        charge_energy(db, attempt.vehicle_id, message.energy_kwh, energy_price)
        _count_preemption(db, attempt.job_id, max(0.0, reached - checkpoint_at))
    return attempt


def on_lost(ledger: Ledger, assignment_id: str, status: str, *, preemption: bool) -> Attempt | None:
    """An assignment ended without a word (car vanished, refused, fell silent): reopen its slot."""
    with ledger.transaction() as db:
        attempt = _active(db, ledger, assignment_id)
        if attempt is None:
            return None
        useful = max(0.0, attempt.checkpoint_tera_ops - attempt.resume_from)
        db.execute("UPDATE assignments SET status = ?, work_tera_ops = ?, paid = 1 WHERE assignment_id = ?",
                   (status, useful, assignment_id))
        _reopen_slot(db, attempt, attempt.checkpoint_tera_ops, attempt.checkpoint)
        if preemption:
            pay(db, attempt.job_id, attempt.vehicle_id, useful, attempt.price)
            _count_preemption(db, attempt.job_id, max(0.0, attempt.done_tera_ops - attempt.checkpoint_tera_ops))
    return attempt


def _payable(claimed: float, shard_work: float, attempt: Attempt) -> float:
    """A car is paid at most for what was left of the shard when it got it, whatever it claims."""
    return min(claimed, max(0.0, shard_work - attempt.resume_from))


def _shard_work(db: sqlite3.Connection, attempt: Attempt) -> float:
    row = db.execute("SELECT work FROM shards WHERE job_id = ? AND shard_id = ?", (attempt.job_id, attempt.shard_id))
    return float(row.fetchone()[0])


def end_job(ledger: Ledger, job_id: str, status: str, reason: str) -> list[Attempt]:
    """Cancel or fail a job: its waiting and running slots are abandoned; returns attempts to withdraw."""
    with ledger.transaction() as db:
        return _end_job(db, ledger, job_id, status, reason)


def _end_job(db: sqlite3.Connection, ledger: Ledger, job_id: str, status: str, reason: str) -> list[Attempt]:
    rows = db.execute("SELECT assignment_id FROM assignments WHERE job_id = ? AND status = 'active'", (job_id,))
    attempts = [a for (aid,) in rows.fetchall() if (a := ledger.attempt(str(aid))) is not None]
    db.execute("UPDATE assignments SET status = 'cancelled' WHERE job_id = ? AND status = 'active'", (job_id,))
    db.execute("UPDATE slots SET status = 'abandoned' WHERE job_id = ? AND status IN ('waiting', 'running')", (job_id,))
    db.execute("UPDATE jobs SET status = ?, reason = ? WHERE job_id = ? AND status IN ('queued', 'running')",
               (status, reason, job_id))
    return attempts


def on_result(ledger: Ledger, message: ShardResult, energy_price: float) -> Outcome:
    """A car finished a shard: record its vote and settle the shard if the votes agree."""
    outcome = Outcome()
    with ledger.transaction() as db:
        attempt = _active(db, ledger, message.assignment_id)
        if attempt is None:
            return outcome
        outcome.attempt = attempt
        work = _shard_work(db, attempt)
        db.execute(
            "UPDATE assignments SET status = 'done', work_tera_ops = ?, energy_kwh = ?, result_digest = ?,"
            " done_tera_ops = ? WHERE assignment_id = ?",
            (_payable(message.work_tera_ops, work, attempt), message.energy_kwh,
             message.result_digest, work, attempt.assignment_id),
        )
        db.execute("UPDATE slots SET status = 'done', result_digest = ? WHERE slot_id = ?",
                   (message.result_digest, attempt.slot_id))
        charge_energy(db, attempt.vehicle_id, message.energy_kwh, energy_price)
        _settle_shard(db, ledger, attempt, outcome)
    return outcome


def _settle_shard(db: sqlite3.Connection, ledger: Ledger, attempt: Attempt, outcome: Outcome) -> None:
    job_id, shard_id = attempt.job_id, attempt.shard_id
    status, accepted = db.execute(
        "SELECT status, accepted_digest FROM shards WHERE job_id = ? AND shard_id = ?", (job_id, shard_id)
    ).fetchone()
    if status == "open":
        votes = [(str(v), str(d)) for v, d in db.execute(
            "SELECT vehicle_id, result_digest FROM slots WHERE job_id = ? AND shard_id = ? AND status = 'done'",
            (job_id, shard_id))]
        counts = dict(db.execute(
            "SELECT status, COUNT(*) FROM slots WHERE job_id = ? AND shard_id = ? GROUP BY status", (job_id, shard_id)))
        trusted = {car: jobs.is_trusted(*ledger.car_record(car)[:2]) for car, _ in votes}
        redundancy = JobSubmission.model_validate_json(
            db.execute("SELECT submission FROM jobs WHERE job_id = ?", (job_id,)).fetchone()[0]).redundancy
        verdict = jobs.decide(votes, redundancy, trusted, counts.get("waiting", 0) + counts.get("running", 0),
                              sum(counts.values()) - counts.get("abandoned", 0))
        if verdict.accepted is not None:
            _accept(db, ledger, attempt, verdict.accepted, outcome)
        elif verdict.need_another:
            db.execute("INSERT INTO slots(job_id, shard_id) VALUES (?, ?)", (job_id, shard_id))
        elif verdict.give_up:
            db.execute("UPDATE shards SET status = 'failed' WHERE job_id = ? AND shard_id = ?", (job_id, shard_id))
            outcome.to_cancel += _end_job(db, ledger, job_id, "failed", f"no agreement on shard {shard_id}")
            outcome.job_finished = True
    elif status == "done":
        _judge(db, attempt.job_id, attempt.assignment_id, accepted, outcome)


def _accept(db: sqlite3.Connection, ledger: Ledger, attempt: Attempt, digest: str, outcome: Outcome) -> None:
    job_id, shard_id = attempt.job_id, attempt.shard_id
    db.execute("UPDATE shards SET status = 'done', accepted_digest = ? WHERE job_id = ? AND shard_id = ?",
               (digest, job_id, shard_id))
    add_total(db, "shards_completed", 1)
    for (aid,) in db.execute(
        "SELECT assignment_id FROM assignments WHERE job_id = ? AND shard_id = ? AND status = 'done' AND paid = 0",
        (job_id, shard_id),
    ).fetchall():
        _judge(db, job_id, str(aid), digest, outcome)
    rows = db.execute(
        "SELECT assignment_id FROM assignments WHERE job_id = ? AND shard_id = ? AND status = 'active'",
        (job_id, shard_id),
    ).fetchall()
    outcome.to_cancel += [a for (aid,) in rows if (a := ledger.attempt(str(aid))) is not None]
    db.execute("UPDATE assignments SET status = 'cancelled' WHERE job_id = ? AND shard_id = ? AND status = 'active'",
               (job_id, shard_id))
    db.execute("UPDATE slots SET status = 'abandoned' WHERE job_id = ? AND shard_id = ?"
               " AND status IN ('waiting', 'running')", (job_id, shard_id))
    left = db.execute("SELECT COUNT(*) FROM shards WHERE job_id = ? AND status != 'done'", (job_id,)).fetchone()[0]
    if left == 0:
        db.execute("UPDATE jobs SET status = 'done' WHERE job_id = ?", (job_id,))
        outcome.job_finished = True


def _judge(db: sqlite3.Connection, job_id: str, assignment_id: str, accepted: str, outcome: Outcome) -> None:
    """Pay a finished assignment whose digest agrees with the accepted one; mark its car wrong if not."""
    vehicle_id, digest, work, price = db.execute(
        "SELECT vehicle_id, result_digest, work_tera_ops, price FROM assignments WHERE assignment_id = ?",
        (assignment_id,),
    ).fetchone()
    valid = digest == accepted
    score = db.execute("SELECT reliability FROM cars WHERE vehicle_id = ?", (vehicle_id,)).fetchone()[0]
    db.execute(
        "UPDATE cars SET valid = valid + ?, wrong = wrong + ?, reliability = ? WHERE vehicle_id = ?",
        (int(valid), int(not valid), jobs.reliability_after(float(score), valid), vehicle_id),
    )
    db.execute("UPDATE assignments SET paid = ? WHERE assignment_id = ?", (1 if valid else -1, assignment_id))
    if valid:
        pay(db, job_id, vehicle_id, float(work), float(price))
    else:
        db.execute("UPDATE jobs SET wrong_results = wrong_results + 1 WHERE job_id = ?", (job_id,))
        add_total(db, "wrong_results", 1)
        outcome.wrong_cars.append(str(vehicle_id))
