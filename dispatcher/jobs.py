"""Pure job rules: checking a submission, cutting it into shards, and deciding on results.

Results are a deterministic function of the shard's secret input, which a car gets only with
its assignment, so honest cars agree and the dispatcher can spot-check them (`dispatcher.results`).
A shard's result is accepted when `redundancy` distinct cars agree on it; a job of redundancy 1
trusts a lone result only from a proven car (BOINC's adaptive replication), otherwise a second
car must agree first.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from protocol.job_messages import JobSubmission
from protocol.topics import check_level
from protocol.vehicle_messages import HARDWARE_TOPS

MAX_TOPS_PER_CAR = max(HARDWARE_TOPS.values())  # the catalogue's largest generation; no car offers more
MIN_SHARD_TERA_OPS = 1.0
EXTRA_REPLICAS = 3  # replicas beyond the redundancy a shard may use to reach agreement
TRUSTED_AFTER_VALID = 3
UNRELIABLE_BELOW = 0.8


MAX_DEADLINE_AHEAD_S = 10 * 365.25 * 86_400.0


def check_submission(job: JobSubmission, now_s: float, deadline_s: float | None) -> str | None:
    """Why the dispatcher must reject `job`, or None if it can take it."""
    if job.min_tops_per_car > MAX_TOPS_PER_CAR:
        return f"min_tops_per_car {job.min_tops_per_car:g} exceeds the largest car ({MAX_TOPS_PER_CAR:g} TOPS)"
    if job.total_work_tera_ops / job.shards < MIN_SHARD_TERA_OPS:
        return f"shards of {job.total_work_tera_ops / job.shards:g} tera-ops are below {MIN_SHARD_TERA_OPS:g}"
    if deadline_s is not None and deadline_s <= now_s:
        return "deadline is already past"
    if deadline_s is not None and deadline_s - now_s > MAX_DEADLINE_AHEAD_S:
        return "deadline is more than ten years ahead"
    if job.price_cap_per_tops_hour == 0:
        return "price cap 0 pays no car"
    return None


def shard_ids(job: JobSubmission) -> list[str]:
    """The shard ids of a job: s0000, s0001, ..."""
    width = max(4, len(str(job.shards - 1)))
    return [f"s{i:0{width}d}" for i in range(job.shards)]


def shard_work(job: JobSubmission) -> float:
    return job.total_work_tera_ops / job.shards


def named_in(payload: bytes) -> tuple[str, str] | None:
    """The job id and name of a submission that failed validation, if they can be read safely."""
    try:
        raw = json.loads(payload)
        return check_level(str(raw["job_id"]), "job id"), str(raw.get("name", ""))[:120]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def new_input_digest() -> str:
    """A shard's secret input: random, kept in the ledger, sent only in its assignments."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the votes on one shard decide."""

    accepted: str | None  # the digest accepted, if any
    wrong_voters: tuple[str, ...] = ()  # cars whose digest lost
    need_another: bool = False  # no agreement yet and nothing outstanding: run one more replica
    give_up: bool = False  # agreement is out of reach within the replica budget


def decide(
    votes: Sequence[tuple[str, str]],
    redundancy: int,
    trusted: Mapping[str, bool],
    outstanding: int,
    replicas_used: int,
) -> Verdict:
    """Decide a shard from its (car, digest) votes."""
    tally: dict[str, list[str]] = {}
    for car, digest in votes:
        tally.setdefault(digest, []).append(car)
    for digest, cars in sorted(tally.items(), key=lambda item: -len(item[1])):
        enough = len(cars) >= max(redundancy, 2) or (
            redundancy == 1 and len(cars) == 1 and len(tally) == 1 and trusted.get(cars[0], False)
        )
        if enough:
            losers = tuple(car for car, vote in votes if vote != digest)
            return Verdict(accepted=digest, wrong_voters=losers)
    if outstanding > 0:
        return Verdict(accepted=None)
    if replicas_used >= redundancy + EXTRA_REPLICAS:
        return Verdict(accepted=None, give_up=True)
    return Verdict(accepted=None, need_another=True)


def reliability_after(score: float, valid: bool) -> float:
    """A car's reliability after one judged result: halved by a wrong one, slowly regained."""
    return min(1.0, score + 0.05 * (1.0 - score)) if valid else score * 0.5


def is_trusted(valid: int, wrong: int) -> bool:
    return wrong == 0 and valid >= TRUSTED_AFTER_VALID
