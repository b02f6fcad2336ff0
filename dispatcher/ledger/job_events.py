"""Job events on the ledger, each inside the caller's transaction: a job queued, rejected, started on a car, ended."""

from __future__ import annotations

import sqlite3

from dispatcher import jobs
from dispatcher.ledger.accounts import ensure_car
from dispatcher.ledger.rows import active_attempts
from dispatcher.records import OPEN_JOB, AssignmentStatus, Attempt, Slot, SlotStatus
from protocol.job_messages import JobStatus, JobSubmission


def add_job(db: sqlite3.Connection, job: JobSubmission, deadline_s: float | None) -> bool:
    """Record a new job with its shards and replica slots; False if the id is taken.

    The id of a rejected job may be used again: the corrected job replaces the rejection.
    """
    db.execute("DELETE FROM jobs WHERE job_id = ? AND status = ?", (job.job_id, JobStatus.REJECTED))
    if db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job.job_id,)).fetchone():
        return False
    db.execute(
        "INSERT INTO jobs(job_id, seq, submission, status, deadline_s, priority) VALUES (?, ?, ?, ?, ?, ?)",
        (job.job_id, _next_seq(db), job.model_dump_json(), JobStatus.QUEUED, deadline_s, job.priority),
    )
    work = jobs.shard_work(job)
    for shard_id in jobs.shard_ids(job):
        db.execute("INSERT INTO shards(job_id, shard_id, work, input_digest) VALUES (?, ?, ?, ?)",
                   (job.job_id, shard_id, work, jobs.new_input_digest()))
        db.executemany("INSERT INTO slots(job_id, shard_id) VALUES (?, ?)", [(job.job_id, shard_id)] * job.redundancy)
    return True


def reject_job(db: sqlite3.Connection, job_id: str, name: str, reason: str) -> bool:
    """Keep a rejected job (its name in place of a submission), so its state survives a restart;
    False if a real job has the id."""
    if db.execute("SELECT 1 FROM jobs WHERE job_id = ? AND status != ?", (job_id, JobStatus.REJECTED)).fetchone():
        return False
    db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
    db.execute("INSERT INTO jobs(job_id, seq, submission, status, reason) VALUES (?, ?, ?, ?, ?)",
               (job_id, _next_seq(db), name, JobStatus.REJECTED, reason))
    return True


def _next_seq(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0])


def start_attempt(
    db: sqlite3.Connection, assignment_id: str, slot: Slot, car: tuple[str, str], tops: float, price: float,
    now_s: float,
) -> None:
    """Record that `car` (vehicle id, owner id) runs `slot` at `tops` from `now_s` on."""
    vehicle_id, owner_id = car
    ensure_car(db, vehicle_id, owner_id)
    db.execute(
        "INSERT INTO assignments(assignment_id, slot_id, job_id, shard_id, vehicle_id, allocated_tops, price,"
        " resume_from, done_tera_ops, checkpoint_tera_ops, checkpoint, assigned_at, heard_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (assignment_id, slot.slot_id, slot.job_id, slot.shard_id, vehicle_id, tops, price,
         slot.resume_from, slot.resume_from, slot.resume_from, slot.checkpoint, now_s, now_s),
    )
    db.execute("UPDATE slots SET status = ?, vehicle_id = ? WHERE slot_id = ?",
               (SlotStatus.RUNNING, vehicle_id, slot.slot_id))
    db.execute("UPDATE jobs SET status = ? WHERE job_id = ? AND status = ?",
               (JobStatus.RUNNING, slot.job_id, JobStatus.QUEUED))


def end_job(db: sqlite3.Connection, job_id: str, status: JobStatus, reason: str) -> list[Attempt]:
    """Cancel or fail a job: its waiting and running slots are abandoned; returns the attempts to withdraw."""
    attempts = active_attempts(db, job_id)
    db.execute("UPDATE assignments SET status = ? WHERE job_id = ? AND status = ?",
               (AssignmentStatus.CANCELLED, job_id, AssignmentStatus.ACTIVE))
    db.execute("UPDATE slots SET status = ? WHERE job_id = ? AND status IN (?, ?)",
               (SlotStatus.ABANDONED, job_id, SlotStatus.WAITING, SlotStatus.RUNNING))
    db.execute("UPDATE jobs SET status = ?, reason = ? WHERE job_id = ? AND status IN (?, ?)",
               (status, reason, job_id, *OPEN_JOB))
    return attempts
