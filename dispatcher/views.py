"""What the dispatcher publishes about jobs and the fleet, read from the ledger and registry."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from dispatcher.ledger import Ledger
from dispatcher.matchmaker import OfferBook
from dispatcher.registry import Registry
from protocol.base import utc_now
from protocol.fleet_messages import FleetSummary, MatchPolicy
from protocol.job_messages import JobState, JobStatus, WaitReason

SENDER = "dispatcher"


@dataclass(frozen=True, slots=True)
class Out:
    """One message to publish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def job_state(ledger: Ledger, job_id: str, sim_time: datetime, wait_reasons: tuple[WaitReason, ...] = ()) -> JobState:
    """The retained state of one job, from the ledger."""
    row = ledger.one(
        "SELECT submission, status, reason, cost, preemptions, redone, wrong_results FROM jobs WHERE job_id = ?",
        job_id,
    )
    if row is None:
        raise KeyError(job_id)
    submission, status, reason, cost, preemptions, redone, wrong = row
    if status == "rejected":
        return JobState(sender=SENDER, sent_at=utc_now(), sim_time=sim_time, job_id=job_id,
                        name=str(submission)[:120], status=JobStatus.REJECTED, reason=str(reason))
    shards = ledger.db.execute(
        "SELECT COUNT(*), SUM(status = 'done'), SUM(work), SUM(CASE WHEN status = 'done' THEN work ELSE 0 END)"
        " FROM shards WHERE job_id = ?", (job_id,)).fetchone()
    total, done, total_work, done_work = (v or 0 for v in shards)
    partial = ledger.scalar(
        "SELECT SUM(m) FROM (SELECT MAX(a.done_tera_ops) AS m FROM assignments a JOIN shards s"
        " USING(job_id, shard_id) WHERE a.job_id = ? AND s.status = 'open' GROUP BY a.shard_id)", job_id)
    running = ledger.scalar(
        "SELECT COUNT(DISTINCT shard_id) FROM assignments WHERE job_id = ? AND status = 'active'", job_id)
    progress = min(1.0, (float(done_work) + partial) / float(total_work)) if total_work else 0.0
    name = _name_of(str(submission))
    return JobState(
        sender=SENDER, sent_at=utc_now(), sim_time=sim_time, job_id=job_id, name=name,
        status=JobStatus(str(status)), reason=str(reason),
        shards_total=int(total), shards_done=int(done), shards_running=int(running),
        progress=1.0 if status == "done" else progress, preemptions=int(preemptions),
        redone_tera_ops=float(redone), wrong_results=int(wrong), cost=float(cost),
        wait_reasons=wait_reasons if status in ("queued", "running") else (),
    )


def _name_of(submission_json: str) -> str:
    from protocol.job_messages import JobSubmission

    return JobSubmission.model_validate_json(submission_json).name


class Throughput:
    """Tera-operations accepted per simulation second over a recent window."""

    def __init__(self, window_sim_s: float) -> None:
        self.window_sim_s = window_sim_s
        self._events: deque[tuple[float, float]] = deque()

    def add(self, sim_s: float, tera_ops: float) -> None:
        self._events.append((sim_s, tera_ops))

    def rate(self, now_sim_s: float) -> float:
        while self._events and self._events[0][0] < now_sim_s - self.window_sim_s:
            self._events.popleft()
        return sum(ops for _, ops in self._events) / self.window_sim_s


def scale_label(cars_per_car: int) -> str:
    """What a scaled summary says about itself, so that nobody mistakes it for a counted fleet."""
    if cars_per_car == 1:
        return ""
    return f"each emulated car stands for {cars_per_car:,} cars (counts, TOPS); jobs and money unscaled"


def fleet_summary(
    registry: Registry, book: OfferBook, ledger: Ledger, *, sim_time: datetime, tops_allocated: float,
    throughput: float, messages_per_s: float, rejected: Mapping[str, int], policy: MatchPolicy,
    cars_per_car: int = 1,
) -> FleetSummary:
    """The aggregates the control room shows, all from the registry, the offer book and the ledger.

    With `cars_per_car` > 1 (the essay demo), car counts and TOPS are multiplied by it and the
    summary's `scenario_scale` says so; jobs, work and money are never scaled. `rejected` counts
    refused messages and claims by reason.
    """
    k = cars_per_car
    totals = ledger.totals()
    jobs = {str(s): int(n) for s, n in ledger.db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")}
    return FleetSummary(
        sender=SENDER, sent_at=utc_now(), sim_time=sim_time, scenario_scale=scale_label(k),
        cars_known=k * len(registry.cars), cars_by_state={s: k * n for s, n in registry.state_counts().items()},
        cars_by_hardware={h: k * n for h, n in registry.by_hardware.items() if n > 0},
        tops_total=k * max(0.0, float(sum(registry.tops_by_hardware.values()))),
        tops_offered=k * max(0.0, book.tops_offered), tops_allocated=k * max(0.0, tops_allocated),
        tops_by_hardware={h: k * float(v) for h, v in registry.tops_by_hardware.items() if v > 0},
        jobs_by_status={s.value: jobs.get(s.value, 0) for s in JobStatus},
        shards_completed=int(totals["shards_completed"]), work_done_tera_ops=totals["work_done"],
        throughput_tops=throughput, preemptions=int(totals["preemptions"]), redone_tera_ops=totals["redone"],
        wrong_results_caught=int(totals["wrong_results"]), earnings_gross=totals["earnings_gross"],
        energy_kwh=totals["energy_kwh"], energy_cost=totals["energy_cost"],
        messages_per_s=messages_per_s, messages_rejected=sum(rejected.values()),
        rejections={reason: n for reason, n in sorted(rejected.items()) if n > 0}, policy=policy,
    )
