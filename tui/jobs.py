"""The control room's book of jobs: the ledger's JobState per job plus the shards it has seen.

Pure: fed by `tui.store.FleetStore`, read by the job view and the job drill-down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol import (
    JobState,
    JobSubmission,
    ShardAssignment,
    ShardCancel,
    ShardPreempted,
    ShardProgress,
    ShardRefused,
    ShardResult,
)


@dataclass(slots=True)
class ShardRow:
    """One assignment of one shard to one car, as seen on the wire."""

    assignment_id: str
    shard_id: str
    vehicle_id: str
    work_tera_ops: float
    done_tera_ops: float = 0.0
    checkpoint_tera_ops: float = 0.0
    status: str = "assigned"  # assigned, done, preempted, refused, cancelled
    note: str = ""

    @property
    def progress(self) -> float:
        return min(self.done_tera_ops / self.work_tera_ops, 1.0) if self.work_tera_ops > 0 else 0.0


@dataclass(slots=True)
class JobRow:
    """One job: the ledger's last word on it, what was submitted, and its shards."""

    job_id: str
    name: str = ""
    status: str = "submitted"
    state: JobState | None = None
    submission: JobSubmission | None = None
    shards: dict[str, ShardRow] = field(default_factory=dict)  # by assignment id
    version: int = 0

    @property
    def progress(self) -> float:
        return self.state.progress if self.state is not None else 0.0


class JobBook:
    """Jobs by id, each with a version so that views update only what changed."""

    def __init__(self) -> None:
        self.rows: dict[str, JobRow] = {}
        self._by_assignment: dict[str, str] = {}
        self.version = 0

    def row(self, job_id: str) -> JobRow:
        found = self.rows.get(job_id)
        if found is None:
            found = self.rows[job_id] = JobRow(job_id)
        return found

    def _touch(self, row: JobRow) -> None:
        row.version += 1
        self.version += 1

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows.values() if row.status == status)

    def apply(self, message: JobState | JobSubmission) -> None:
        """A job state from the ledger, or a submission seen on its way to the dispatcher."""
        row = self.row(message.job_id)
        if isinstance(message, JobState):
            row.state = message
            row.status = message.status.value
            row.name = message.name or row.name
        else:
            row.submission = message
            row.name = row.name or message.name
        self._touch(row)

    def command(self, message: ShardAssignment | ShardCancel) -> None:
        if isinstance(message, ShardAssignment):
            row = self.row(message.job_id)
            row.shards[message.assignment_id] = ShardRow(
                message.assignment_id, message.shard_id, message.vehicle_id, message.work_tera_ops,
                done_tera_ops=message.resume_from_tera_ops, checkpoint_tera_ops=message.resume_from_tera_ops,
            )
            self._by_assignment[message.assignment_id] = message.job_id
            self._touch(row)
            return
        shard = self._shard(message.assignment_id)
        if shard is not None:
            shard[1].status, shard[1].note = "cancelled", message.reason
            self._touch(shard[0])

    def _shard(self, assignment_id: str) -> tuple[JobRow, ShardRow] | None:
        job_id = self._by_assignment.get(assignment_id)
        if job_id is None:
            return None
        row = self.rows[job_id]
        shard = row.shards.get(assignment_id)
        return None if shard is None else (row, shard)

    def shard_report(self, vehicle_id: str, message: ShardProgress | ShardResult | ShardPreempted
                     | ShardRefused) -> None:
        """A car's report on an assignment; unknown assignments are noted on the car only."""
        found = self._shard(message.assignment_id)
        if found is None:
            return
        row, shard = found
        if isinstance(message, ShardProgress):
            shard.done_tera_ops, shard.checkpoint_tera_ops = message.done_tera_ops, message.checkpoint_tera_ops
        elif isinstance(message, ShardResult):
            shard.done_tera_ops, shard.status = shard.work_tera_ops, "done"
        elif isinstance(message, ShardPreempted):
            shard.checkpoint_tera_ops, shard.status, shard.note = (
                message.checkpoint_tera_ops, "preempted", message.reason)
        else:
            shard.status, shard.note = "refused", message.reason
        self._touch(row)
