"""Shard events on the ledger, each inside the caller's transaction and applied only to an active assignment.

Positions in a shard (`resume_from`, `done_tera_ops`, `checkpoint_tera_ops`) are absolute
tera-operations from the shard's start; `work_tera_ops` in results and preemptions is the
work one car did in one assignment. No position is believed beyond what the car's allocated
rate allows at that moment (`dispatcher.credit`), and a car that stops before the end is paid
for the work it hands over, up to its checkpoint.
"""

from __future__ import annotations

import sqlite3

from dispatcher.credit import Moment, creditable, reachable, reached_estimate, within
from dispatcher.ledger.accounts import charge_energy, count_preemption, count_rejection, pay_for_shard
from dispatcher.ledger.rows import active_attempt
from dispatcher.records import AssignmentStatus, Attempt, Payment, SlotStatus
from protocol.job_messages import ShardPreempted


def record_progress(db: sqlite3.Connection, assignment_id: str, done: float, checkpoint_at: float, checkpoint: str,
                    at: Moment) -> bool:
    """Keep the furthest progress and checkpoint of an active assignment that its rate allows; True if applied.

    A position past the shard's end is clamped to it; one past the car's rate is refused (its
    progress is held at the rate, its checkpoint is not taken) and counted.
    """
    attempt = active_attempt(db, assignment_id)
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


def reopen_slot(db: sqlite3.Connection, attempt: Attempt, checkpoint_at: float, checkpoint: str) -> None:
    """The attempt's slot waits for another car, from the further of where it started and `checkpoint_at`."""
    db.execute(
        "UPDATE slots SET status = ?, resume_from = ?, checkpoint = ?, vehicle_id = NULL"
        " WHERE slot_id = ? AND status = ?",
        (SlotStatus.WAITING, max(attempt.resume_from, checkpoint_at), checkpoint, attempt.slot_id, SlotStatus.RUNNING),
    )


def _handed_back(db: sqlite3.Connection, attempt: Attempt, message: ShardPreempted, limit: float) -> tuple[float, str]:
    """The checkpoint a preemption hands back, if the car's rate allows it; else the last one reported."""
    claimed = min(message.checkpoint_tera_ops, attempt.shard_work)
    if not within(claimed, limit):
        count_rejection(db, "preemption_beyond_rate")
    elif claimed > attempt.checkpoint_tera_ops:
        return claimed, message.checkpoint
    return attempt.checkpoint_tera_ops, attempt.checkpoint


def record_preemption(db: sqlite3.Connection, message: ShardPreempted, energy_price: float,
                      at: Moment) -> Attempt | None:
    """A car handed back a shard with its checkpoint: pay the work it hands over, reopen the slot from there.

    Work past the checkpoint is lost (redone by the next car) and is counted, not paid: so a car
    that takes a slot again and again is paid at most once for each stretch of the shard.
    """
    attempt = active_attempt(db, message.assignment_id)
    if attempt is None:
        return None
    limit = reachable(attempt, at)
    checkpoint_at, checkpoint = _handed_back(db, attempt, message, limit)
    paid_to = min(checkpoint_at, creditable(attempt, at.now_s))  # the slack is never paid
    kept = max(0.0, min(message.work_tera_ops, paid_to - attempt.resume_from))
    paid = pay_for_shard(db, attempt.job_id, attempt.shard_id, attempt.vehicle_id, kept, attempt.price)
    reached = min(limit, max(attempt.done_tera_ops, checkpoint_at, attempt.resume_from + message.work_tera_ops))
    db.execute(
        "UPDATE assignments SET status = ?, work_tera_ops = ?, energy_kwh = ?, paid = ?,"
        " checkpoint_tera_ops = ?, checkpoint = ?, heard_at = MAX(heard_at, ?) WHERE assignment_id = ?",
        (AssignmentStatus.PREEMPTED, paid, message.energy_kwh, Payment.SETTLED, checkpoint_at, checkpoint, at.now_s,
         attempt.assignment_id),
    )
    reopen_slot(db, attempt, checkpoint_at, checkpoint)
    charge_energy(db, attempt.vehicle_id, message.energy_kwh, energy_price)
    count_preemption(db, attempt.job_id, max(0.0, reached - checkpoint_at))
    return attempt


def record_loss(db: sqlite3.Connection, assignment_id: str, status: AssignmentStatus, *, preemption: bool,
                last_heard_s: float | None = None) -> Attempt | None:
    """An assignment ended without a result (car vanished, refused, fell silent): reopen its slot.

    A lost car is paid up to its last checkpoint; the work it probably did past it (its last
    report, or its rate up to when it was last heard) is what the next car redoes.
    """
    attempt = active_attempt(db, assignment_id)
    if attempt is None:
        return None
    # paid up to its checkpoint, as far as its rate allowed by when it was last heard (no slack)
    useful = max(0.0, min(attempt.checkpoint_tera_ops, creditable(attempt, attempt.heard_at)) - attempt.resume_from)
    paid = 0.0
    if preemption:
        paid = pay_for_shard(db, attempt.job_id, attempt.shard_id, attempt.vehicle_id, useful, attempt.price)
        heard = max(attempt.heard_at, last_heard_s if last_heard_s is not None else attempt.heard_at)
        count_preemption(db, attempt.job_id, max(0.0, reached_estimate(attempt, heard) - attempt.checkpoint_tera_ops))
    db.execute("UPDATE assignments SET status = ?, work_tera_ops = ?, paid = ? WHERE assignment_id = ?",
               (status, paid, Payment.SETTLED, assignment_id))
    reopen_slot(db, attempt, attempt.checkpoint_tera_ops, attempt.checkpoint)
    return attempt
