"""A shard running on a car: progress in simulated time, checkpoints, and its result digest."""

from __future__ import annotations

import hashlib

from protocol.job_messages import ShardAssignment
from protocol.job_messages import result_digest as result_digest  # the one definition, shared with the dispatcher

CHECKPOINT_PREFIX = "ckpt"


def wrong_digest(input_digest: str, shard_id: str, vehicle_id: str) -> str:
    """What a faulty car returns instead: differs from the honest digest and between faulty cars."""
    return hashlib.sha256(f"{input_digest}:{shard_id}:faulty:{vehicle_id}".encode()).hexdigest()


def checkpoint_token(shard_id: str, tera_ops: float) -> str:
    """An opaque checkpoint reference, as a real job would store one next to its state."""
    return f"{CHECKPOINT_PREFIX}:{shard_id}:{tera_ops:.6f}"


class RunningShard:
    """One assignment in progress on one car; all times are simulation seconds."""

    __slots__ = (
        "assignment",
        "checkpoint_tera_ops",
        "done_tera_ops",
        "energy_kwh",
        "last_checkpoint_t",
        "started_t",
        "tops",
        "vanish_at_tera_ops",
    )

    def __init__(self, assignment: ShardAssignment, tops: float, now: float, vanish_at: float | None) -> None:
        self.assignment = assignment
        self.tops = tops
        self.done_tera_ops = assignment.resume_from_tera_ops
        self.checkpoint_tera_ops = assignment.resume_from_tera_ops
        self.started_t = now
        self.last_checkpoint_t = now
        self.energy_kwh = 0.0
        self.vanish_at_tera_ops = vanish_at

    @property
    def remaining_tera_ops(self) -> float:
        return max(0.0, self.assignment.work_tera_ops - self.done_tera_ops)

    @property
    def work_this_assignment(self) -> float:
        """Tera-ops this car did in this assignment (not counting the resumed part)."""
        return max(0.0, self.done_tera_ops - self.assignment.resume_from_tera_ops)

    def run(self, seconds: float, power_kw: float) -> None:
        """Compute for `seconds` (never past the end of the shard)."""
        seconds = min(seconds, self.remaining_tera_ops / self.tops)
        self.done_tera_ops = min(self.assignment.work_tera_ops, self.done_tera_ops + self.tops * seconds)
        self.energy_kwh += power_kw * seconds / 3600.0

    def seconds_to_finish(self) -> float:
        return self.remaining_tera_ops / self.tops

    @property
    def finished(self) -> bool:
        return self.done_tera_ops >= self.assignment.work_tera_ops * (1 - 1e-12)

    def checkpoint_due(self, now: float) -> bool:
        return now - self.last_checkpoint_t >= self.assignment.checkpoint_interval_s

    def take_checkpoint(self, now: float) -> None:
        self.checkpoint_tera_ops = self.done_tera_ops
        self.last_checkpoint_t = now

    @property
    def checkpoint(self) -> str:
        return checkpoint_token(self.assignment.shard_id, self.checkpoint_tera_ops)

    def should_vanish(self) -> bool:
        return self.vanish_at_tera_ops is not None and self.done_tera_ops >= self.vanish_at_tera_ops
