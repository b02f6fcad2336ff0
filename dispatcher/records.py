"""The ledger's vocabulary: the states of shards, slots and assignments, and the rows others read.

A job's states are the wire's `protocol.job_messages.JobStatus`. The enums' values are what the
SQLite columns hold, so a ledger written before them reads the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import NamedTuple

from protocol.job_messages import JobStatus, JobSubmission

OPEN_JOB = (JobStatus.QUEUED, JobStatus.RUNNING)  # a job that still waits for or runs work


class ShardStatus(StrEnum):
    """A shard: open until its result is accepted, or failed when its replicas cannot agree."""

    OPEN = "open"
    DONE = "done"
    FAILED = "failed"


class SlotStatus(StrEnum):
    """A replica slot: one line of execution of a shard."""

    WAITING = "waiting"  # for a car, from its `resume_from`
    RUNNING = "running"  # on a car, under an active assignment
    DONE = "done"  # its car returned a result, which votes
    ABANDONED = "abandoned"  # its job ended or its shard was accepted without it


class AssignmentStatus(StrEnum):
    """One attempt of a slot on one car; only an active one changes on a message."""

    ACTIVE = "active"
    DONE = "done"  # a result arrived and was taken as a vote
    PREEMPTED = "preempted"  # the car handed the shard back with a checkpoint
    LOST = "lost"  # the car vanished or fell silent
    REFUSED = "refused"  # the car declined the shard
    REJECTED = "rejected"  # its result was refused: too fast, or a failed spot check
    CANCELLED = "cancelled"  # the dispatcher withdrew it: job ended, or shard settled elsewhere


class Payment(IntEnum):
    """Whether an assignment has been paid (the ledger's `paid` column)."""

    WITHHELD = -1  # its result was refused or judged wrong: it is never paid
    PENDING = 0  # running, or a result waiting for its shard's vote
    SETTLED = 1  # paid what it earned, which may be nothing


@dataclass(frozen=True, slots=True)
class Attempt:
    """One assignment row, as the engine needs it."""

    assignment_id: str
    slot_id: int
    job_id: str
    shard_id: str
    vehicle_id: str
    allocated_tops: float
    price: float
    resume_from: float
    status: AssignmentStatus
    done_tera_ops: float
    checkpoint_tera_ops: float
    checkpoint: str
    assigned_at: float  # the dispatcher's simulation seconds
    heard_at: float  # when the car last spoke of this assignment
    shard_work: float  # the whole shard's tera-ops


@dataclass(frozen=True, slots=True)
class Slot:
    """A replica line of a shard that waits for a car."""

    slot_id: int
    job_id: str
    shard_id: str
    resume_from: float
    checkpoint: str
    shard_work: float  # the whole shard's tera-ops
    input_digest: str


@dataclass(frozen=True, slots=True)
class OpenJob:
    """A queued or running job, with its deadline on the ledger's clock."""

    job_id: str
    submission: JobSubmission
    status: JobStatus
    deadline_s: float | None


@dataclass(frozen=True, slots=True)
class JobReport:
    """Where one job stands, as its published state needs it."""

    job_id: str
    name: str
    status: JobStatus
    reason: str
    cost: float = 0.0
    preemptions: int = 0
    redone_tera_ops: float = 0.0
    wrong_results: int = 0
    shards_total: int = 0
    shards_done: int = 0
    shards_running: int = 0
    work_total: float = 0.0
    work_done: float = 0.0  # of accepted shards, plus the furthest position reached in each open one


class CarRecord(NamedTuple):
    """A car's judged results: how many were valid or wrong, and its reliability."""

    valid: int = 0
    wrong: int = 0
    reliability: float = 1.0


@dataclass(frozen=True, slots=True)
class Statement:
    """Earnings of one car or one owner."""

    who: str
    tops_hours: float
    gross: float
    energy_kwh: float
    energy_cost: float

    @property
    def net(self) -> float:
        return self.gross - self.energy_cost


@dataclass(slots=True)
class Outcome:
    """What a result changed, for the engine to publish."""

    attempt: Attempt | None = None
    refused: str | None = None  # why the result was refused, if it was
    to_cancel: list[Attempt] = field(default_factory=list)
    wrong_cars: list[str] = field(default_factory=list)
