"""Results: refused if they came faster than the car's rate allows or fail a spot check, else a vote.

Each shard's input is a secret the car gets only with its assignment, so the dispatcher can
recompute an honest (emulated) result and checks a fraction of them at once (a wrong one is
refused without waiting for a vote, BOINC's spot-check validation); the others, and every
job of redundancy 2 or more, are settled when enough distinct cars agree.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from dispatcher import jobs
from dispatcher.credit import Moment, finished_too_fast
from dispatcher.ledger import Attempt, Ledger, add_total, charge_energy, count_rejection, pay_for_shard
from dispatcher.work import active, end_job_in
from protocol.job_messages import JobSubmission, ShardResult, result_digest


@dataclass(slots=True)
class Outcome:
    """What an event changed, for the engine to publish."""

    attempt: Attempt | None = None
    refused: str | None = None  # why the result was refused, if it was
    to_cancel: list[Attempt] = field(default_factory=list)
    wrong_cars: list[str] = field(default_factory=list)
    job_finished: bool = False


def on_result(ledger: Ledger, message: ShardResult, energy_price: float, at: Moment, *, spot_check: bool) -> Outcome:
    """A car finished a shard: refuse an impossible or wrong result, else record its vote and settle."""
    outcome = Outcome()
    with ledger.transaction() as db:
        attempt = active(ledger, message.assignment_id)
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
            "UPDATE assignments SET status = 'done', work_tera_ops = ?, energy_kwh = ?, result_digest = ?,"
            " done_tera_ops = ?, heard_at = MAX(heard_at, ?) WHERE assignment_id = ?",
            (work, message.energy_kwh, message.result_digest, attempt.shard_work, at.now_s, attempt.assignment_id),
        )
        db.execute("UPDATE slots SET status = 'done', result_digest = ? WHERE slot_id = ?",
                   (message.result_digest, attempt.slot_id))
        _settle_shard(db, ledger, attempt, outcome)
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
        "UPDATE assignments SET status = 'rejected', paid = -1, energy_kwh = ?, result_digest = ?,"
        " heard_at = MAX(heard_at, ?) WHERE assignment_id = ?",
        (message.energy_kwh, message.result_digest, at.now_s, attempt.assignment_id),
    )
    db.execute("UPDATE slots SET status = 'waiting', vehicle_id = NULL WHERE slot_id = ? AND status = 'running'",
               (attempt.slot_id,))
    count_rejection(db, outcome.refused)
    _mark(db, attempt.vehicle_id, valid=False)
    outcome.wrong_cars.append(attempt.vehicle_id)
    if outcome.refused == "spot_check_failed":
        _count_wrong(db, attempt.job_id)


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
            outcome.to_cancel += end_job_in(db, ledger, job_id, "failed", f"no agreement on shard {shard_id}")
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
    vehicle_id, shard_id, digest, work, price = db.execute(
        "SELECT vehicle_id, shard_id, result_digest, work_tera_ops, price FROM assignments WHERE assignment_id = ?",
        (assignment_id,),
    ).fetchone()
    valid = digest == accepted
    _mark(db, str(vehicle_id), valid=valid)
    if valid:
        paid = pay_for_shard(db, job_id, str(shard_id), str(vehicle_id), float(work), float(price))
        db.execute("UPDATE assignments SET paid = 1, work_tera_ops = ? WHERE assignment_id = ?", (paid, assignment_id))
    else:
        db.execute("UPDATE assignments SET paid = -1 WHERE assignment_id = ?", (assignment_id,))
        _count_wrong(db, job_id)
        outcome.wrong_cars.append(str(vehicle_id))


def _mark(db: sqlite3.Connection, vehicle_id: str, *, valid: bool) -> None:
    """One more judged result for a car: its valid or wrong count, and its reliability."""
    score = db.execute("SELECT reliability FROM cars WHERE vehicle_id = ?", (vehicle_id,)).fetchone()[0]
    db.execute(
        "UPDATE cars SET valid = valid + ?, wrong = wrong + ?, reliability = ? WHERE vehicle_id = ?",
        (int(valid), int(not valid), jobs.reliability_after(float(score), valid), vehicle_id),
    )


def _count_wrong(db: sqlite3.Connection, job_id: str) -> None:
    db.execute("UPDATE jobs SET wrong_results = wrong_results + 1 WHERE job_id = ?", (job_id,))
    add_total(db, "wrong_results", 1)
