"""A result on the ledger, inside the caller's transaction: refused if it came faster than the car's rate
allows or fails a spot check, else a vote that may settle its shard.

Each shard's input is a secret the car gets only with its assignment, so the dispatcher can
recompute an honest (emulated) result and checks a fraction of them at once (a wrong one is
refused without waiting for a vote, BOINC's spot-check validation); the others, and every
job of redundancy 2 or more, are settled when enough distinct cars agree.
"""

from __future__ import annotations

import sqlite3

from dispatcher import jobs
from dispatcher.credit import Moment, finished_too_fast
from dispatcher.ledger.accounts import (
    add_total,
    charge_energy,
    count_rejection,
    count_wrong_result,
    judge_car,
    pay_for_shard,
)
from dispatcher.ledger.job_events import end_job
from dispatcher.ledger.rows import active_attempt, active_attempts, car_record
from dispatcher.records import AssignmentStatus, Attempt, Outcome, Payment, ShardStatus, SlotStatus
from protocol.job_messages import JobStatus, JobSubmission, ShardResult, result_digest


def record_result(db: sqlite3.Connection, message: ShardResult, energy_price: float, at: Moment, *,
                  spot_check: bool) -> Outcome:
    """A car finished a shard: refuse an impossible or wrong result, else record its vote and settle."""
    outcome = Outcome()
    attempt = active_attempt(db, message.assignment_id)
    if attempt is None:
        return outcome
    outcome.attempt = attempt
    charge_energy(db, attempt.vehicle_id, message.energy_kwh, energy_price)
    outcome.refused = _refusal(db, attempt, message, at, spot_check)
    if outcome.refused is not None:
        _refuse(db, attempt, message, outcome, at)
        return outcome
    work = min(message.work_tera_ops, max(0.0, attempt.shard_work - attempt.resume_from))
    db.execute(
        "UPDATE assignments SET status = ?, work_tera_ops = ?, energy_kwh = ?, result_digest = ?,"
        " done_tera_ops = ?, heard_at = MAX(heard_at, ?) WHERE assignment_id = ?",
        (AssignmentStatus.DONE, work, message.energy_kwh, message.result_digest, attempt.shard_work, at.now_s,
         attempt.assignment_id),
    )
    db.execute("UPDATE slots SET status = ?, result_digest = ? WHERE slot_id = ?",
               (SlotStatus.DONE, message.result_digest, attempt.slot_id))
    _settle_shard(db, attempt, outcome)
    return outcome


def _refusal(
    db: sqlite3.Connection, attempt: Attempt, message: ShardResult, at: Moment, spot_check: bool
) -> str | None:
    if finished_too_fast(attempt, at):
        return "result_too_fast"
    if spot_check:
        (secret,) = db.execute("SELECT input_digest FROM shards WHERE job_id = ? AND shard_id = ?",
                               (attempt.job_id, attempt.shard_id)).fetchone()
        if message.result_digest != result_digest(str(secret), attempt.shard_id):
            return "spot_check_failed"
    return None


def _refuse(db: sqlite3.Connection, attempt: Attempt, message: ShardResult, outcome: Outcome, at: Moment) -> None:
    """Not paid, counted, the car's reliability halved; its slot runs again from where it started."""
    assert outcome.refused is not None
    db.execute(
        "UPDATE assignments SET status = ?, paid = ?, energy_kwh = ?, result_digest = ?,"
        " heard_at = MAX(heard_at, ?) WHERE assignment_id = ?",
        (AssignmentStatus.REJECTED, Payment.WITHHELD, message.energy_kwh, message.result_digest, at.now_s,
         attempt.assignment_id),
    )
    db.execute("UPDATE slots SET status = ?, vehicle_id = NULL WHERE slot_id = ? AND status = ?",
               (SlotStatus.WAITING, attempt.slot_id, SlotStatus.RUNNING))
    count_rejection(db, outcome.refused)
    judge_car(db, attempt.vehicle_id, valid=False)
    outcome.wrong_cars.append(attempt.vehicle_id)
    if outcome.refused == "spot_check_failed":
        count_wrong_result(db, attempt.job_id)


def _settle_shard(db: sqlite3.Connection, attempt: Attempt, outcome: Outcome) -> None:
    job_id, shard_id = attempt.job_id, attempt.shard_id
    status, accepted = db.execute(
        "SELECT status, accepted_digest FROM shards WHERE job_id = ? AND shard_id = ?", (job_id, shard_id)
    ).fetchone()
    if status == ShardStatus.OPEN:
        verdict = _verdict(db, job_id, shard_id)
        if verdict.accepted is not None:
            _accept(db, attempt, verdict.accepted, outcome)
        elif verdict.need_another:
            db.execute("INSERT INTO slots(job_id, shard_id) VALUES (?, ?)", (job_id, shard_id))
        elif verdict.give_up:
            db.execute("UPDATE shards SET status = ? WHERE job_id = ? AND shard_id = ?",
                       (ShardStatus.FAILED, job_id, shard_id))
            outcome.to_cancel += end_job(db, job_id, JobStatus.FAILED, f"no agreement on shard {shard_id}")
    elif status == ShardStatus.DONE:
        _judge(db, attempt.job_id, attempt.assignment_id, accepted, outcome)


def _verdict(db: sqlite3.Connection, job_id: str, shard_id: str) -> jobs.Verdict:
    """What the votes on a shard decide, given its job's redundancy and the cars' records."""
    votes = [(str(v), str(d)) for v, d in db.execute(
        "SELECT vehicle_id, result_digest FROM slots WHERE job_id = ? AND shard_id = ? AND status = ?",
        (job_id, shard_id, SlotStatus.DONE))]
    counts = {SlotStatus(s): int(n) for s, n in db.execute(
        "SELECT status, COUNT(*) FROM slots WHERE job_id = ? AND shard_id = ? GROUP BY status", (job_id, shard_id))}
    trusted = {car: jobs.is_trusted(*car_record(db, car)[:2]) for car, _ in votes}
    redundancy = JobSubmission.model_validate_json(
        db.execute("SELECT submission FROM jobs WHERE job_id = ?", (job_id,)).fetchone()[0]).redundancy
    outstanding = counts.get(SlotStatus.WAITING, 0) + counts.get(SlotStatus.RUNNING, 0)
    return jobs.decide(votes, redundancy, trusted, outstanding,
                       sum(counts.values()) - counts.get(SlotStatus.ABANDONED, 0))


def _accept(db: sqlite3.Connection, attempt: Attempt, digest: str, outcome: Outcome) -> None:
    job_id, shard_id = attempt.job_id, attempt.shard_id
    db.execute("UPDATE shards SET status = ?, accepted_digest = ? WHERE job_id = ? AND shard_id = ?",
               (ShardStatus.DONE, digest, job_id, shard_id))
    add_total(db, "shards_completed", 1)
    for (aid,) in db.execute(
        "SELECT assignment_id FROM assignments WHERE job_id = ? AND shard_id = ? AND status = ? AND paid = ?",
        (job_id, shard_id, AssignmentStatus.DONE, Payment.PENDING),
    ).fetchall():
        _judge(db, job_id, str(aid), digest, outcome)
    outcome.to_cancel += active_attempts(db, job_id, shard_id)
    db.execute("UPDATE assignments SET status = ? WHERE job_id = ? AND shard_id = ? AND status = ?",
               (AssignmentStatus.CANCELLED, job_id, shard_id, AssignmentStatus.ACTIVE))
    db.execute("UPDATE slots SET status = ? WHERE job_id = ? AND shard_id = ? AND status IN (?, ?)",
               (SlotStatus.ABANDONED, job_id, shard_id, SlotStatus.WAITING, SlotStatus.RUNNING))
    left = db.execute("SELECT COUNT(*) FROM shards WHERE job_id = ? AND status != ?",
                      (job_id, ShardStatus.DONE)).fetchone()[0]
    if left == 0:
        db.execute("UPDATE jobs SET status = ? WHERE job_id = ?", (JobStatus.DONE, job_id))


def _judge(db: sqlite3.Connection, job_id: str, assignment_id: str, accepted: str, outcome: Outcome) -> None:
    """Pay a finished assignment whose digest agrees with the accepted one; mark its car wrong if not."""
    vehicle_id, shard_id, digest, work, price = db.execute(
        "SELECT vehicle_id, shard_id, result_digest, work_tera_ops, price FROM assignments WHERE assignment_id = ?",
        (assignment_id,),
    ).fetchone()
    valid = digest == accepted
    judge_car(db, str(vehicle_id), valid=valid)
    if valid:
        paid = pay_for_shard(db, job_id, str(shard_id), str(vehicle_id), float(work), float(price))
        db.execute("UPDATE assignments SET paid = ?, work_tera_ops = ? WHERE assignment_id = ?",
                   (Payment.SETTLED, paid, assignment_id))
    else:
        db.execute("UPDATE assignments SET paid = ? WHERE assignment_id = ?", (Payment.WITHHELD, assignment_id))
        count_wrong_result(db, job_id)
        outcome.wrong_cars.append(str(vehicle_id))

