"""Rows read into records, inside or outside an event's transaction: assignments and car records."""

from __future__ import annotations

import sqlite3
from typing import Any

from dispatcher.records import AssignmentStatus, Attempt, CarRecord

ATTEMPT_COLUMNS = (
    "a.assignment_id, a.slot_id, a.job_id, a.shard_id, a.vehicle_id, a.allocated_tops, a.price, a.resume_from,"
    " a.status, a.done_tera_ops, a.checkpoint_tera_ops, a.checkpoint, a.assigned_at, a.heard_at, s.work"
    " FROM assignments a JOIN shards s USING(job_id, shard_id)"
)


def to_attempt(row: tuple[Any, ...]) -> Attempt:
    aid, slot_id, job_id, shard_id, vid, tops, price, resume_from, status, done, ckpt_at, ckpt, at, heard, work = row
    return Attempt(str(aid), int(slot_id), str(job_id), str(shard_id), str(vid), float(tops), float(price),
                   float(resume_from), AssignmentStatus(status), float(done), float(ckpt_at), str(ckpt), float(at),
                   float(heard), float(work))


def attempt(db: sqlite3.Connection, assignment_id: str) -> Attempt | None:
    row = db.execute(f"SELECT {ATTEMPT_COLUMNS} WHERE a.assignment_id = ?", (assignment_id,)).fetchone()
    return to_attempt(row) if row else None


def active_attempt(db: sqlite3.Connection, assignment_id: str) -> Attempt | None:
    """The assignment if it is still active: only an active one changes on a message."""
    found = attempt(db, assignment_id)
    return found if found is not None and found.status is AssignmentStatus.ACTIVE else None


def active_attempts(db: sqlite3.Connection, job_id: str | None = None, shard_id: str | None = None) -> list[Attempt]:
    """Active assignments, of one job (and one of its shards) if named, in assignment id order."""
    sql, params = f"SELECT {ATTEMPT_COLUMNS} WHERE a.status = ?", [AssignmentStatus.ACTIVE.value]
    if job_id is not None:
        sql, params = sql + " AND a.job_id = ?", [*params, job_id]
    if shard_id is not None:
        sql, params = sql + " AND a.shard_id = ?", [*params, shard_id]
    return [to_attempt(row) for row in db.execute(sql + " ORDER BY a.assignment_id", params)]


def car_record(db: sqlite3.Connection, vehicle_id: str) -> CarRecord:
    """A car's valid and wrong results and its reliability; a car never judged has a clean record."""
    row = db.execute("SELECT valid, wrong, reliability FROM cars WHERE vehicle_id = ?", (vehicle_id,)).fetchone()
    return CarRecord() if row is None else CarRecord(int(row[0]), int(row[1]), float(row[2]))
