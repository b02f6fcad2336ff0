"""Jobs and their shards: submission, assignment, progress, results, preemption and job state."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, model_validator

from protocol.base import (
    CarTops,
    Fraction,
    HardwareGeneration,
    Identifier,
    Kwh,
    Message,
    NonNegative,
    Positive,
    Price,
    TeraOps,
    TeraOpsOrZero,
    Text,
    WireModel,
)

Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{16,64}$")]
Checkpoint = Annotated[str, Field(max_length=4096)]


def result_digest(input_digest: str, shard_id: str) -> str:
    """The honest result of an (emulated) shard: sha256 of its secret input digest and its id, as hex.

    The input digest is a random value the dispatcher draws per shard and sends only in the
    assignment, so a car that was not given the shard cannot compute its result.
    """
    return hashlib.sha256(f"{input_digest}:{shard_id}".encode()).hexdigest()


class JobKind(StrEnum):
    """The kind of AI work a job is, for display and for realistic job streams."""

    INFERENCE = "inference"
    TRAINING = "training"
    RENDERING = "rendering"
    OTHER = "other"


class JobSubmission(Message):
    """A request to run a job; the submitter picks `job_id` so it can watch its state first."""

    kind: Literal["job_submit"] = "job_submit"
    job_id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=120)]
    job_kind: JobKind = JobKind.OTHER
    total_work_tera_ops: TeraOps
    shards: int = Field(ge=1, le=100_000)
    min_tops_per_car: CarTops
    max_parallel_shards: int = Field(ge=1, le=100_000)
    deadline: AwareDatetime | None = None  # simulation time
    priority: int = Field(default=0, ge=-100, le=100)
    price_cap_per_tops_hour: Price | None = None
    redundancy: int = Field(default=1, ge=1, le=5)
    checkpoint_interval_s: Positive = 60.0  # simulation seconds
    min_hardware: HardwareGeneration | None = None
    input_seed: int = Field(default=0, ge=0, le=2**63 - 1)  # unused: each shard's input is drawn at random

    @model_validator(mode="after")
    def _parallel_not_above_shards_times_redundancy(self) -> JobSubmission:
        if self.max_parallel_shards > self.shards * self.redundancy:
            msg = "max_parallel_shards exceeds shards x redundancy"
            raise ValueError(msg)
        return self


class ShardAssignment(Message):
    """The dispatcher asks one car to run one shard (or resume it from a checkpoint)."""

    kind: Literal["shard_assign"] = "shard_assign"
    assignment_id: Identifier
    vehicle_id: Identifier
    job_id: Identifier
    shard_id: Identifier
    work_tera_ops: TeraOps  # the shard's whole work
    resume_from_tera_ops: TeraOpsOrZero = 0.0
    checkpoint: Checkpoint = ""
    input_digest: Digest  # the shard's secret input: the result is a deterministic function of it
    allocated_tops: CarTops
    checkpoint_interval_s: Positive
    price_per_tops_hour: Price
    deadline: AwareDatetime | None = None
    # the ledger's reliability score of the car (valid results weighed against wrong ones), for
    # the control room's car view; the car ignores it
    car_reliability: Fraction | None = None

    @model_validator(mode="after")
    def _resume_within_work(self) -> ShardAssignment:
        if self.resume_from_tera_ops > self.work_tera_ops:
            msg = "resume_from_tera_ops exceeds work_tera_ops"
            raise ValueError(msg)
        return self


class ShardCancel(Message):
    """The dispatcher withdraws an assignment (job cancelled, or the shard finished elsewhere)."""

    kind: Literal["shard_cancel"] = "shard_cancel"
    assignment_id: Identifier
    vehicle_id: Identifier
    reason: Text = ""


class ShardProgress(Message):
    """A car reports work done and its latest checkpoint (QoS 1)."""

    kind: Literal["shard_progress"] = "shard_progress"
    assignment_id: Identifier
    job_id: Identifier
    shard_id: Identifier
    done_tera_ops: TeraOpsOrZero
    checkpoint_tera_ops: TeraOpsOrZero
    checkpoint: Checkpoint = ""


class ShardResult(Message):
    """A car finished a shard; `result_digest` must agree between honest cars."""

    kind: Literal["shard_result"] = "shard_result"
    assignment_id: Identifier
    job_id: Identifier
    shard_id: Identifier
    result_digest: Digest
    work_tera_ops: TeraOps  # work this car did in this assignment
    energy_kwh: Kwh
    elapsed_s: NonNegative  # simulation seconds


class ShardPreempted(Message):
    """A car stops a shard before the end (owner returned) and hands back its checkpoint."""

    kind: Literal["shard_preempted"] = "shard_preempted"
    assignment_id: Identifier
    job_id: Identifier
    shard_id: Identifier
    checkpoint_tera_ops: TeraOpsOrZero
    checkpoint: Checkpoint = ""
    work_tera_ops: TeraOpsOrZero  # work this car did in this assignment
    energy_kwh: Kwh
    reason: Text


class ShardRefused(Message):
    """A car refuses an assignment it cannot or must not run, saying why."""

    kind: Literal["shard_refused"] = "shard_refused"
    assignment_id: Identifier
    reason: Text


class JobStatus(StrEnum):
    """The life of a job in the ledger."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class WaitReason(WireModel):
    """How many cars fail one requirement of a waiting job (like `condor_q -better-analyze`)."""

    requirement: Annotated[str, Field(max_length=120)]
    cars_failing: int = Field(ge=0)


class JobState(Message):
    """The ledger's view of one job (retained per job); a rejected job says why."""

    kind: Literal["job_state"] = "job_state"
    job_id: Identifier
    name: Annotated[str, Field(max_length=120)] = ""
    status: JobStatus
    reason: Text = ""
    shards_total: int = Field(default=0, ge=0)
    shards_done: int = Field(default=0, ge=0)
    shards_running: int = Field(default=0, ge=0)
    progress: Fraction = 0.0
    preemptions: int = Field(default=0, ge=0)
    redone_tera_ops: NonNegative = 0.0
    wrong_results: int = Field(default=0, ge=0)
    cost: NonNegative = 0.0
    wait_reasons: tuple[WaitReason, ...] = ()
