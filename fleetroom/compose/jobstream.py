"""A stream of realistic AI jobs: LLM inference batches, fine-tuning shards, rendering (a pure core).

Every job's work is computed from what it is, with the arithmetic stated (model, assumption):

- LLM inference: tokens x 2 x parameters operations (one multiply-add per weight per token,
  the usual forward-pass estimate; attention's share ignored).
- Fine-tuning: tokens x 6 x parameters operations (forward and backward pass, the usual
  training estimate from the scaling-law literature, e.g. Kaplan et al. 2020).
- Rendering: frames x tera-ops per frame (assumption, stated per template).

Cars are credited at their allocated peak int8 TOPS (no utilisation discount): a 70B-parameter
model's 100M-token batch is 1.4e7 tera-ops, about 47 simulated minutes on one 5,000 TOPS HW5 car.
The light families (`inference`, `training`, `rendering`) fit HW3/HW4 cars in a few simulated
minutes; the `*-70b` and `rendering-4k` families are sized to fill a fleet of HW5/HW6 cars (the
essay demo). `scale` multiplies every size.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from protocol import HardwareGeneration, JobKind, JobSubmission

TERA = 1e12


@dataclass(frozen=True)
class WorkModel:
    """How a family's shard work follows from its units: `units` (tokens, frames) x tera-ops per unit."""

    unit: str  # "token" or "frame"
    tera_ops_per_unit: float
    units_per_shard: tuple[float, float]
    basis: str  # the arithmetic, in words

    def shard_range_tera_ops(self) -> tuple[float, float]:
        """The smallest and largest shard, in tera-ops."""
        low, high = self.units_per_shard
        return low * self.tera_ops_per_unit, high * self.tera_ops_per_unit


def llm_inference(params: float, tokens: tuple[float, float]) -> WorkModel:
    """Batch inference of a `params`-parameter model: 2 x params operations per token."""
    return WorkModel("token", 2 * params / TERA, tokens, f"2 x {params:.0e} params ops/token (forward pass)")


def fine_tuning(params: float, tokens: tuple[float, float]) -> WorkModel:
    """Fine-tuning a `params`-parameter model: 6 x params operations per training token."""
    return WorkModel("token", 6 * params / TERA, tokens, f"6 x {params:.0e} params ops/token (forward + backward)")


def rendering(tera_ops_per_frame: float, frames: tuple[float, float], basis: str) -> WorkModel:
    """Rendering frames of a stated cost each."""
    return WorkModel("frame", tera_ops_per_frame, frames, basis)


@dataclass(frozen=True)
class JobTemplate:
    """One family of jobs and the ranges its submissions are drawn from."""

    kind: JobKind
    names: tuple[str, ...]
    shards: tuple[int, int]
    work: WorkModel
    min_tops_per_car: float
    redundancy: int
    checkpoint_interval_s: float
    priority: int
    min_hardware: HardwareGeneration | None = None

    @property
    def shard_work_tera_ops(self) -> tuple[float, float]:
        """The range a shard's work is drawn from, in tera-ops."""
        return self.work.shard_range_tera_ops()


_8B = 8e9
_70B = 70e9
_FRAME_HD = "assumption: 2,000 tera-ops per 1080p path-traced frame (about 20 s of a 100 TOPS GPU)"
_FRAME_4K = "assumption: 60,000 tera-ops per 4K film frame (about 10 min of a 100 TOPS GPU)"

TEMPLATES: dict[str, JobTemplate] = {
    # light families: a few simulated minutes on an HW3/HW4 car
    "inference": JobTemplate(
        JobKind.INFERENCE, ("llm batch inference 8B", "speech-to-text batch", "embedding backfill"),
        (4, 16), llm_inference(_8B, (1.5e6, 9e6)), 100.0, 1, 30.0, 10,
    ),
    "training": JobTemplate(
        JobKind.TRAINING, ("fine-tune shard 8B", "distillation shard 8B"),
        (2, 8), fine_tuning(_8B, (2e6, 12e6)), 1000.0, 2, 60.0, 0, HardwareGeneration.HW5,
    ),
    "rendering": JobTemplate(
        JobKind.RENDERING, ("film frames", "architectural walkthrough", "game lightmap bake"),
        (8, 24), rendering(2_000.0, (5, 30), _FRAME_HD), 50.0, 1, 30.0, -10,
    ),
    # heavy families: 10-60 simulated minutes on an HW5 car, to fill a 5 GTOPS fleet
    "inference-70b": JobTemplate(
        JobKind.INFERENCE, ("llm batch inference 70B", "synthetic data generation 70B", "eval sweep 70B"),
        (16, 64), llm_inference(_70B, (30e6, 120e6)), 1000.0, 1, 600.0, 10, HardwareGeneration.HW5,
    ),
    "fine-tune-70b": JobTemplate(
        JobKind.TRAINING, ("fine-tune shard 70B", "RL rollout shard 70B"),
        (8, 32), fine_tuning(_70B, (8e6, 30e6)), 1000.0, 2, 600.0, 0, HardwareGeneration.HW5,
    ),
    "rendering-4k": JobTemplate(
        JobKind.RENDERING, ("4K film frames", "4K VFX shot"),
        (16, 64), rendering(60_000.0, (50, 250), _FRAME_4K), 1000.0, 1, 600.0, -10, HardwareGeneration.HW5,
    ),
}

LIGHT_MIX = {"inference": 0.5, "training": 0.2, "rendering": 0.3}
ESSAY_MIX = {"inference-70b": 0.5, "fine-tune-70b": 0.2, "rendering-4k": 0.3}


def mean_car_seconds(mix: Mapping[str, float], car_tops: float) -> float:
    """Simulated car-seconds one job of `mix` keeps cars busy on average, at `car_tops` each."""
    total_weight = sum(mix.values()) or 1.0
    seconds = 0.0
    for name, weight in mix.items():
        t = TEMPLATES[name]
        low, high = t.shard_work_tera_ops
        shards = sum(t.shards) / 2
        seconds += weight / total_weight * shards * t.redundancy * (low + high) / 2 / car_tops
    return seconds


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
        units = self.rng.uniform(*template.work.units_per_shard)
        per_shard = units * template.work.tera_ops_per_unit * self.scale
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
