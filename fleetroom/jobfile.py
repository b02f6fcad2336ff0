"""Job files for `fleetroom submit --file` (TOML or JSON): a strict model whose keys are the flags'.

The numbers' ranges are the submit flags' own types, so a file and the flags accept the same
values; the wire model (`JobSubmission`) then checks the job as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator

from dispatcher.jobs import MAX_DEADLINE_AHEAD_S
from fleetroom.common import finite, whole
from fleetroom.files import STRICT, read_data, validated
from protocol import HardwareGeneration, JobKind
from protocol.base import MAX_CAR_TOPS, MAX_PRICE, MAX_TERA_OPS

MAX_SHARDS = 100_000
WORK = finite(0, MAX_TERA_OPS, above=True)
SHARDS = whole(1, MAX_SHARDS)
MIN_TOPS = finite(0, MAX_CAR_TOPS, above=True)
DEADLINE_S = finite(0, MAX_DEADLINE_AHEAD_S, above=True)  # the dispatcher's own limit
PRIORITY = whole(-100, 100)
PRICE_CAP = finite(0, MAX_PRICE)
REDUNDANCY = whole(1, 5)
CHECKPOINT_INTERVAL_S = finite(0, MAX_DEADLINE_AHEAD_S, above=True)
INPUT_SEED = whole(0, 2**63 - 1)

WIRE_NAMES = {
    "name": "name", "work": "total_work_tera_ops", "shards": "shards", "min_tops": "min_tops_per_car",
    "parallel": "max_parallel_shards", "priority": "priority", "price_cap": "price_cap_per_tops_hour",
    "redundancy": "redundancy", "checkpoint_interval": "checkpoint_interval_s", "kind": "job_kind",
    "min_hardware": "min_hardware", "input_seed": "input_seed", "job_id": "job_id",
}
"""Each job-file key (a flag's name with underscores) and the `JobSubmission` field it fills."""


class JobFile(BaseModel):
    """What a job file may say; every key is optional, and a flag overrides it."""

    model_config = STRICT

    name: str | None = None
    work: Annotated[float, BeforeValidator(WORK.check)] | None = None
    shards: Annotated[int, BeforeValidator(SHARDS.check)] | None = None
    min_tops: Annotated[float, BeforeValidator(MIN_TOPS.check)] | None = None
    parallel: Annotated[int, BeforeValidator(SHARDS.check)] | None = None
    deadline_s: Annotated[float, BeforeValidator(DEADLINE_S.check)] | None = None
    priority: Annotated[int, BeforeValidator(PRIORITY.check)] | None = None
    price_cap: Annotated[float, BeforeValidator(PRICE_CAP.check)] | None = None
    redundancy: Annotated[int, BeforeValidator(REDUNDANCY.check)] | None = None
    checkpoint_interval: Annotated[float, BeforeValidator(CHECKPOINT_INTERVAL_S.check)] | None = None
    kind: JobKind | None = None
    min_hardware: HardwareGeneration | None = None
    input_seed: Annotated[int, BeforeValidator(INPUT_SEED.check)] | None = None
    job_id: str | None = None


def load_job_file(path: Path) -> dict[str, Any]:
    """The keys a job file gives (JSON values), or a `FileError` with one line per problem."""
    job = validated(JobFile, read_data(path, "job file"), str(path))
    return job.model_dump(mode="json", exclude_none=True)
