"""A stream of realistic AI jobs: inference batches, training shards, rendering (a pure core).

Sizes are in tera-operations and chosen so that, at the demo's 60x speed, a shard on a parked
HW4/HW5 car takes a few simulated minutes: long enough to be preempted, short enough to finish
within a demo. `scale` multiplies every size.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from protocol import HardwareGeneration, JobKind, JobSubmission


@dataclass(frozen=True)
class JobTemplate:
    """One family of jobs and the ranges its submissions are drawn from."""

    kind: JobKind
    names: tuple[str, ...]
    shards: tuple[int, int]
    shard_work_tera_ops: tuple[float, float]
    min_tops_per_car: float
    redundancy: int
    checkpoint_interval_s: float
    priority: int
    min_hardware: HardwareGeneration | None = None


TEMPLATES: dict[str, JobTemplate] = {
    "inference": JobTemplate(
        JobKind.INFERENCE, ("llm batch inference", "speech-to-text batch", "embedding backfill",
                            "image captioning batch"),
        (4, 16), (2e4, 1.5e5), 100.0, 1, 30.0, 10,
    ),
    "training": JobTemplate(
        JobKind.TRAINING, ("fine-tune shard", "distillation shard", "RL rollout shard"),
        (2, 8), (1e5, 6e5), 1000.0, 2, 60.0, 0, HardwareGeneration.HW5,
    ),
    "rendering": JobTemplate(
        JobKind.RENDERING, ("film frames", "architectural walkthrough", "game lightmap bake"),
        (8, 24), (1e4, 6e4), 50.0, 1, 30.0, -10,
    ),
}


class JobStream:
    """Draws job submissions of a given mix of kinds with a seeded random generator."""

    def __init__(
        self, rng: random.Random, mix: Mapping[str, float], *, sender: str, prefix: str = "job", scale: float = 1.0
    ) -> None:
        unknown = set(mix) - set(TEMPLATES)
        if unknown:
            raise ValueError(f"unknown job kinds: {sorted(unknown)}")
        self.rng = rng
        self.kinds = list(mix)
        self.weights = [mix[k] for k in self.kinds]
        self.sender = sender
        self.prefix = prefix
        self.scale = scale
        self.count = 0

    def next(self, sent_at: datetime, sim_now: datetime) -> JobSubmission:
        """The next job, stamped with wall time `sent_at` and simulation time `sim_now`."""
        template = TEMPLATES[self.rng.choices(self.kinds, self.weights)[0]]
        self.count += 1
        shards = self.rng.randint(*template.shards)
        per_shard = self.rng.uniform(*template.shard_work_tera_ops) * self.scale
        name = self.rng.choice(template.names)
        return JobSubmission(
            sender=self.sender, sent_at=sent_at, sim_time=sim_now,
            job_id=f"{self.prefix}-{self.count:05d}", name=f"{name} #{self.count}",
            job_kind=template.kind, total_work_tera_ops=round(per_shard * shards, 1), shards=shards,
            min_tops_per_car=template.min_tops_per_car,
            max_parallel_shards=shards * template.redundancy, priority=template.priority,
            redundancy=template.redundancy, checkpoint_interval_s=template.checkpoint_interval_s,
            min_hardware=template.min_hardware, deadline=sim_now + timedelta(hours=12),
            input_seed=self.rng.randrange(2**32),
        )
