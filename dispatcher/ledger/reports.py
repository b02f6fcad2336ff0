"""What the ledger says about one job for its published state: shards, work reached, money, losses."""

from __future__ import annotations

import sqlite3

from dispatcher.records import AssignmentStatus, JobReport, ShardStatus
from protocol.job_messages import JobStatus, JobSubmission


def job_report(db: sqlite3.Connection, job_id: str) -> JobReport | None:
    """Where a job stands, None if the ledger has no such job; a rejected job has only its name and reason."""
    row = db.execute(
        "SELECT submission, status, reason, cost, preemptions, redone, wrong_results FROM jobs WHERE job_id = ?",
        (job_id,),
    ).fetchone()
    if row is None:
        return None
    submission, status, reason, cost, preemptions, redone, wrong = row
    if status == JobStatus.REJECTED:  # its submission column holds the name it was sent with
        return JobReport(job_id, str(submission)[:120], JobStatus.REJECTED, str(reason))
    total, done, work_total, work_done = (v or 0 for v in db.execute(
        "SELECT COUNT(*), SUM(status = ?), SUM(work), SUM(CASE WHEN status = ? THEN work ELSE 0 END)"
        " FROM shards WHERE job_id = ?", (ShardStatus.DONE, ShardStatus.DONE, job_id)).fetchone())
    (reached,) = db.execute(  # the furthest position reported in each open shard
        "SELECT SUM(m) FROM (SELECT MAX(a.done_tera_ops) AS m FROM assignments a JOIN shards s"
        " USING(job_id, shard_id) WHERE a.job_id = ? AND s.status = ? GROUP BY a.shard_id)",
        (job_id, ShardStatus.OPEN)).fetchone()
    (running,) = db.execute(
        "SELECT COUNT(DISTINCT shard_id) FROM assignments WHERE job_id = ? AND status = ?",
        (job_id, AssignmentStatus.ACTIVE)).fetchone()
    return JobReport(
        job_id=job_id, name=JobSubmission.model_validate_json(str(submission)).name, status=JobStatus(status),
        reason=str(reason), cost=float(cost), preemptions=int(preemptions), redone_tera_ops=float(redone),
        wrong_results=int(wrong), shards_total=int(total), shards_done=int(done), shards_running=int(running),
        work_total=float(work_total), work_done=float(work_done) + float(reached or 0.0),
    )
