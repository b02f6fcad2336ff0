"""A scheduling round: for each open job, in the order cars rank jobs, place waiting replica slots.

Jobs are taken by priority, then by price cap, then by age (the cars' side of the match: they
prefer urgent, well-paid work); each slot is matched against the offer book under the policy
in force (the job's side). A job that cannot place a slot gets its "why is it not running?"
analysis, at most every `analyze_every_s` wall seconds.
"""

from __future__ import annotations

import random
from collections.abc import Container
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dispatcher import jobs, work
from dispatcher.matchmaker import Need, Offer
from dispatcher.views import SENDER, Out
from protocol.base import utc_now
from protocol.codec import encode
from protocol.job_messages import JobSubmission, ShardAssignment, WaitReason

if TYPE_CHECKING:
    from dispatcher.engine import Engine

ANALYSES_PER_ROUND = 2  # "why is it not running" is a scan: bound it per round, whatever the queue
ANALYSIS_SAMPLE = 5_000  # offers looked at per analysis; counts beyond are scaled and marked "sampled"


class Exclusions(Container[str]):
    """Cars a slot must not go to: those that ran its shard, and unreliable ones."""

    def __init__(self, shard_cars: set[str], unreliable: set[str]) -> None:
        self.shard_cars, self.unreliable = shard_cars, unreliable

    def __contains__(self, vehicle_id: object) -> bool:
        return vehicle_id in self.shard_cars or vehicle_id in self.unreliable


class Scheduler:
    """Places waiting slots on offers and explains why jobs wait."""

    def __init__(self, engine: Engine, rng: random.Random, analyze_every_s: float = 2.0) -> None:
        self.engine = engine
        self.rng = rng
        self.analyze_every_s = analyze_every_s
        self.wait_reasons: dict[str, tuple[WaitReason, ...]] = {}
        self._analyzed_at: dict[str, float] = {}
        self._submissions: dict[str, JobSubmission] = {}
        self._counter = int(engine.ledger.scalar("SELECT COUNT(*) FROM assignments"))
        self._analyses_left = ANALYSES_PER_ROUND

    def submission(self, job_id: str) -> JobSubmission | None:
        if job_id not in self._submissions:
            row = self.engine.ledger.one("SELECT submission, status FROM jobs WHERE job_id = ?", job_id)
            if row is None or row[1] == "rejected":
                return None
            self._submissions[job_id] = JobSubmission.model_validate_json(str(row[0]))
        return self._submissions[job_id]

    def forget(self, job_id: str) -> None:
        self._submissions.pop(job_id, None)
        self.wait_reasons.pop(job_id, None)

    def check(self, job: JobSubmission, deadline_s: float | None) -> str | None:
        return jobs.check_submission(job, self.engine.now_s, deadline_s)

    def run_round(self) -> list[Out]:
        outs: list[Out] = []
        now_s = self.engine.now_s
        self._analyses_left = ANALYSES_PER_ROUND
        for job in work.open_jobs(self.engine.ledger):
            if job.deadline_s is not None and now_s > job.deadline_s:
                outs += self.engine.end_job(job.job_id, "failed", "deadline passed")
                self.forget(job.job_id)
                continue
            outs += self._place(job.submission, now_s)
        return outs

    def _place(self, job: JobSubmission, now_s: float) -> list[Out]:
        ledger = self.engine.ledger
        free = job.max_parallel_shards - work.running_count(ledger, job.job_id)
        slots = work.waiting_slots(ledger, job.job_id, free) if free > 0 else []
        outs: list[Out] = []
        for slot in slots:
            need = Need(
                min_tops=job.min_tops_per_car, min_hardware=job.min_hardware, price_cap=job.price_cap_per_tops_hour,
                work_tera_ops=max(1e-9, slot.work - slot.resume_from), checkpoint_interval_s=job.checkpoint_interval_s,
            )
            exclude = Exclusions(work.shard_cars(ledger, job.job_id, slot.shard_id), self.engine.unreliable)
            offer = self.engine.book.match(need, now_s, exclude)
            if offer is None:
                self._explain(job.job_id, need, exclude, now_s)
                return outs
            outs.append(self._assign(job, slot, offer))
        if self.wait_reasons.pop(job.job_id, None) is not None:
            self.engine.dirty.add(job.job_id)
        return outs

    def _assign(self, job: JobSubmission, slot: work.Slot, offer: Offer) -> Out:
        engine = self.engine
        self._counter += 1
        aid = f"a{self._counter}-{self.rng.getrandbits(32):08x}"
        car = engine.registry.car(offer.vehicle_id)
        price = offer.asking_price
        deadline_s = engine.ledger.one("SELECT deadline_s FROM jobs WHERE job_id = ?", job.job_id)
        deadline = None
        if deadline_s is not None and isinstance(deadline_s[0], float):  # on the cars' clock, not the ledger's
            deadline = datetime.fromtimestamp(deadline_s[0] - engine.clock_offset_s, UTC)
        # the message is built before the ledger records the attempt, so a value it cannot carry
        # fails here, with nothing recorded, rather than after the commit
        message = ShardAssignment(
            sender=SENDER, sent_at=utc_now(), sim_time=engine.sim_now(), assignment_id=aid,
            vehicle_id=offer.vehicle_id, job_id=job.job_id, shard_id=slot.shard_id, work_tera_ops=slot.work,
            resume_from_tera_ops=min(slot.resume_from, slot.work), checkpoint=slot.checkpoint,
            input_digest=slot.input_digest, allocated_tops=offer.free_tops,
            checkpoint_interval_s=job.checkpoint_interval_s, price_per_tops_hour=price, deadline=deadline,
        )
        work.start_attempt(engine.ledger, aid, slot, (offer.vehicle_id, car.owner), offer.free_tops, price,
                           engine.now_s)
        engine.held[offer.vehicle_id] = offer
        engine._watch(aid, offer.vehicle_id, (job.job_id, slot.shard_id), offer.free_tops, engine.wall())
        engine.dirty.add(job.job_id)
        return Out(engine.topics.commands(offer.vehicle_id), encode(message))

    def _explain(self, job_id: str, need: Need, exclude: Exclusions, now_s: float) -> None:
        """condor_q -better-analyze: how many cars fail each requirement of a waiting job."""
        wall = self.engine.wall()
        if self._analyses_left <= 0 or wall - self._analyzed_at.get(job_id, -1e18) < self.analyze_every_s:
            return
        self._analyses_left -= 1
        self._analyzed_at[job_id] = wall
        book, registry = self.engine.book, self.engine.registry
        counts, sampled = book.analyze(need, now_s, exclude, sample_limit=ANALYSIS_SAMPLE)
        reasons = [WaitReason(requirement="car online, parked and offering compute",
                              cars_failing=max(0, len(registry.cars) - len(book)))]
        suffix = " (sampled)" if sampled else ""
        for requirement, n in sorted(counts.items(), key=lambda item: -item[1]):
            reasons.append(WaitReason(requirement=(requirement + suffix)[:120], cars_failing=n))
        reasons = reasons[:12]
        if reasons != list(self.wait_reasons.get(job_id, ())):
            self.wait_reasons[job_id] = tuple(reasons)
            self.engine.dirty.add(job_id)
