"""A scheduling round: for each open job, in the order cars rank jobs, place waiting replica slots.

Jobs are taken by priority, then by price cap, then by age (the cars' side of the match: they
prefer urgent, well-paid work); each slot is matched against the offer book under the policy
in force (the job's side). A job that cannot place a slot gets its "why is it not running?"
analysis, at most every `analyze_every_s` wall seconds.
"""

from __future__ import annotations

from collections.abc import Container

from dispatcher.assignments import Assignments
from dispatcher.clock import LedgerClock
from dispatcher.ledger import Ledger
from dispatcher.matchmaker import Need
from dispatcher.offers import Offers
from dispatcher.registry import Registry
from dispatcher.views import JobStates, Out
from protocol.job_messages import JobStatus, JobSubmission, WaitReason

ANALYSES_PER_ROUND = 2  # "why is it not running" is a scan: bound it per round, whatever the queue
ANALYSIS_SAMPLE = 5_000  # offers looked at per analysis; counts beyond are scaled and marked "sampled"
MAX_WAIT_REASONS = 12


class Exclusions(Container[str]):
    """Cars a slot must not go to: those that ran its shard, and unreliable ones."""

    def __init__(self, shard_cars: set[str], unreliable: set[str]) -> None:
        self.shard_cars, self.unreliable = shard_cars, unreliable

    def __contains__(self, vehicle_id: object) -> bool:
        return vehicle_id in self.shard_cars or vehicle_id in self.unreliable


class Scheduler:
    """Places waiting slots on offers and explains why jobs wait."""

    def __init__(
        self, ledger: Ledger, clock: LedgerClock, *, offers: Offers, registry: Registry, assignments: Assignments,
        job_states: JobStates, analyze_every_s: float = 2.0,
    ) -> None:
        self.ledger, self.clock, self.offers, self.registry = ledger, clock, offers, registry
        self.assignments, self.job_states = assignments, job_states
        self.analyze_every_s = analyze_every_s
        self._analyzed_at: dict[str, float] = {}
        self._analyses_left = ANALYSES_PER_ROUND

    def run_round(self) -> list[Out]:
        """Fail the open jobs past their deadline and place the others' waiting slots."""
        outs: list[Out] = []
        now_s = self.clock.now_s
        self._analyses_left = ANALYSES_PER_ROUND
        for job in self.ledger.open_jobs():
            if job.deadline_s is not None and now_s > job.deadline_s:
                outs += self.assignments.end_job(job.job_id, JobStatus.FAILED, "deadline passed")
                self.job_states.forget(job.job_id)
                continue
            outs += self._place(job.submission, now_s, job.deadline_s)
        return outs

    def _place(self, job: JobSubmission, now_s: float, deadline_s: float | None) -> list[Out]:
        free = job.max_parallel_shards - self.ledger.running_slot_count(job.job_id)
        slots = self.ledger.waiting_slots(job.job_id, free) if free > 0 else []
        outs: list[Out] = []
        for slot in slots:
            need = Need(
                min_tops=job.min_tops_per_car, min_hardware=job.min_hardware, price_cap=job.price_cap_per_tops_hour,
                work_tera_ops=max(1e-9, slot.shard_work - slot.resume_from),
                checkpoint_interval_s=job.checkpoint_interval_s,
            )
            exclude = Exclusions(self.ledger.shard_cars(job.job_id, slot.shard_id), self.offers.unreliable)
            offer = self.offers.book.match(need, now_s, exclude)
            if offer is None:
                self._explain(job.job_id, need, exclude, now_s)
                return outs
            outs.append(self.assignments.start(job, slot, offer, deadline_s))
        self.job_states.placed(job.job_id)
        return outs

    def _explain(self, job_id: str, need: Need, exclude: Exclusions, now_s: float) -> None:
        """condor_q -better-analyze: how many cars fail each requirement of a waiting job."""
        wall = self.clock.wall()
        if self._analyses_left <= 0 or wall - self._analyzed_at.get(job_id, -1e18) < self.analyze_every_s:
            return
        self._analyses_left -= 1
        self._analyzed_at[job_id] = wall
        book = self.offers.book
        counts, sampled = book.analyze(need, now_s, exclude, sample_limit=ANALYSIS_SAMPLE)
        reasons = [WaitReason(requirement="car online, parked and offering compute",
                              cars_failing=max(0, len(self.registry.cars) - len(book)))]
        suffix = " (sampled)" if sampled else ""
        for requirement, n in sorted(counts.items(), key=lambda item: -item[1]):
            reasons.append(WaitReason(requirement=(requirement + suffix)[:120], cars_failing=n))
        self.job_states.explain(job_id, tuple(reasons[:MAX_WAIT_REASONS]))
