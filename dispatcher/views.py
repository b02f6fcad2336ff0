"""What the dispatcher publishes about jobs and the fleet, read from the ledger and registry."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dispatcher.ledger import Ledger
from dispatcher.matchmaker import OfferBook
from dispatcher.records import OPEN_JOB, JobReport
from dispatcher.registry import Registry
from protocol import hours
from protocol.base import HardwareGeneration, utc_now
from protocol.codec import AnyMessage, encode
from protocol.fleet_messages import FleetSummary, MatchPolicy
from protocol.job_messages import JobState, JobStatus, WaitReason
from protocol.power import HARDWARE_POWER
from protocol.topics import DELIVERY, Channel, Topics
from protocol.vocabulary import CarState

SENDER = "dispatcher"
HARDWARE_NAMES = frozenset(g.value for g in HardwareGeneration)


@dataclass(frozen=True, slots=True)
class Out:
    """One message to publish, with its channel's QoS and retain flag."""

    topic: str
    payload: bytes
    qos: int
    retain: bool

    @classmethod
    def on(cls, channel: Channel, topic: str, message: AnyMessage) -> Out:
        """`message` for `topic` of `channel`, delivered as `protocol.topics.DELIVERY` says for the channel."""
        delivery = DELIVERY[channel]
        return cls(topic, encode(message), delivery.qos, delivery.retain)


def job_state(report: JobReport, sim_time: datetime, wait_reasons: tuple[WaitReason, ...] = ()) -> JobState:
    """The retained state of one job, from the ledger's report on it."""
    if report.status is JobStatus.REJECTED:
        return JobState(sender=SENDER, sent_at=utc_now(), sim_time=sim_time, job_id=report.job_id,
                        name=report.name, status=JobStatus.REJECTED, reason=report.reason)
    progress = min(1.0, report.work_done / report.work_total) if report.work_total else 0.0
    return JobState(
        sender=SENDER, sent_at=utc_now(), sim_time=sim_time, job_id=report.job_id, name=report.name,
        status=report.status, reason=report.reason,
        shards_total=report.shards_total, shards_done=report.shards_done, shards_running=report.shards_running,
        progress=1.0 if report.status is JobStatus.DONE else progress, preemptions=report.preemptions,
        redone_tera_ops=report.redone_tera_ops, wrong_results=report.wrong_results, cost=report.cost,
        wait_reasons=wait_reasons if report.status in OPEN_JOB else (),
    )


class JobStates:
    """The jobs whose retained state must be published again, and why each waiting job waits."""

    def __init__(self, ledger: Ledger, topics: Topics, sim_now: Callable[[], datetime]) -> None:
        self.ledger, self.topics, self.sim_now = ledger, topics, sim_now
        self.changed: set[str] = set()
        self.wait_reasons: dict[str, tuple[WaitReason, ...]] = {}

    def mark(self, job_id: str) -> None:
        """The job changed: publish its state with the next flush."""
        self.changed.add(job_id)

    def explain(self, job_id: str, reasons: tuple[WaitReason, ...]) -> None:
        """Why a job waits, published if it differs from what was said before."""
        if reasons != self.wait_reasons.get(job_id, ()):
            self.wait_reasons[job_id] = reasons
            self.mark(job_id)

    def placed(self, job_id: str) -> None:
        """Every slot the job could run was placed: it no longer waits for a reason."""
        if self.wait_reasons.pop(job_id, None) is not None:
            self.mark(job_id)

    def forget(self, job_id: str) -> None:
        """The job is new or ended: what was said of its waiting no longer holds."""
        self.wait_reasons.pop(job_id, None)

    def flush(self) -> list[Out]:
        """The retained state of every job that changed, in job id order."""
        outs: list[Out] = []
        for job_id in sorted(self.changed):
            report = self.ledger.job_report(job_id)
            if report is not None:
                state = job_state(report, self.sim_now(), self.wait_reasons.get(job_id, ()))
                outs.append(Out.on(Channel.JOB_STATE, self.topics.job_state(job_id), state))
        self.changed.clear()
        return outs


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


@dataclass(frozen=True, slots=True)
class RunningWork:
    """What the summary counts outside the ledger: running shards and the message intake (issue 14)."""

    shards: int = 0  # distinct shards with an active assignment
    assignments: int = 0  # active assignments, replicas counted
    messages_received: int = 0
    ingest_backlog: int = 0  # messages waiting in the inbound queue


def scale_label(cars_per_emulated_car: int) -> str:
    """What a scaled summary says about itself, so that nobody mistakes it for a counted fleet."""
    if cars_per_emulated_car == 1:
        return ""
    return (f"each emulated car stands for {cars_per_emulated_car:,} cars (counts, TOPS, power, energy drawn); "
            "jobs and money unscaled")


def power_and_hours(registry: Registry, sim_time: datetime, scale: int, now_s: float) -> dict[str, Any]:
    """The summary's power and hours fields: power and energy (up to `now_s`, the ledger's seconds) from the
    assignments running, the rest from the model.

    `sim_time` is local time in the dispatcher's zone (that of its `--sim-start`), which the
    fleet's owners live by when both are started alike.
    """
    rated_kw = sum(n * HARDWARE_POWER[HardwareGeneration(hw)].compute_power_kw
                   for hw, n in registry.by_hardware.items() if n > 0 and hw in HARDWARE_NAMES)
    online = registry.online_count
    parked = online - registry.by_state[CarState.DRIVING]
    tops = scale * max(0.0, float(sum(registry.tops_by_hardware.values())))
    drawn = registry.energy_drawn(now_s)
    return {
        "compute_power_kw": scale * max(0.0, registry.compute_kw),
        "compute_power_from_grid_kw": scale * max(0.0, registry.compute_kw_from_grid),
        "rated_power_kw": scale * rated_kw,
        "energy_from_battery_kwh": scale * drawn["battery"],
        "energy_from_grid_kwh": scale * drawn["grid"],
        "parked_share": min(1.0, max(0.0, parked / online)) if online > 0 else None,
        "parked_share_week_model": hours.parked_share_week(),
        "parked_share_by_weekday_model": hours.parked_share_by_weekday(),
        "tops_forecast_24h": hours.forecast_tops(sim_time, tops),
        "forecast_start_hour": sim_time.hour,
    }


def fleet_summary(
    registry: Registry, book: OfferBook, ledger: Ledger, *, sim_time: datetime, tops_allocated: float,
    throughput: float, messages_per_s: float, rejected: Mapping[str, int], policy: MatchPolicy,
    cars_per_emulated_car: int = 1, running: RunningWork = RunningWork(),
    cars_by_owner_mode: Mapping[str, int] | None = None,
    faults_detected: Mapping[str, int] | None = None, now_s: float | None = None,
) -> FleetSummary:
    """The aggregates the control room shows, all from the registry, the offer book and the ledger.

    With `cars_per_emulated_car` > 1 (the essay demo), car counts and TOPS are multiplied by it and
    the summary's `scenario_scale` says so; jobs, work and money are never scaled. `rejected`
    counts refused messages and claims by reason; `running` is what the service counts beside.
    """
    scale = cars_per_emulated_car
    now_s = sim_time.timestamp() if now_s is None else now_s
    totals = ledger.totals()
    jobs_by_status = ledger.jobs_by_status()
    return FleetSummary(
        sender=SENDER, sent_at=utc_now(), sim_time=sim_time, scenario_scale=scale_label(scale),
        cars_known=scale * len(registry.cars), cars_by_state={s: scale * n for s, n in registry.state_counts().items()},
        cars_by_hardware={h: scale * n for h, n in registry.by_hardware.items() if n > 0},
        tops_total=scale * max(0.0, float(sum(registry.tops_by_hardware.values()))),
        tops_offered=scale * max(0.0, book.tops_offered), tops_allocated=scale * max(0.0, tops_allocated),
        tops_by_hardware={h: scale * float(v) for h, v in registry.tops_by_hardware.items() if v > 0},
        jobs_by_status={s.value: jobs_by_status.get(s, 0) for s in JobStatus},
        shards_completed=int(totals["shards_completed"]), work_done_tera_ops=totals["work_done"],
        throughput_tops=throughput, preemptions=int(totals["preemptions"]), redone_tera_ops=totals["redone"],
        wrong_results_caught=int(totals["wrong_results"]), earnings_gross=totals["earnings_gross"],
        energy_kwh=totals["energy_kwh"], energy_cost=totals["energy_cost"],
        messages_per_s=messages_per_s, messages_rejected=sum(rejected.values()),
        rejections={reason: n for reason, n in sorted(rejected.items()) if n > 0}, policy=policy,
        **power_and_hours(registry, sim_time, scale, now_s),
        shards_running=running.shards, assignments_running=running.assignments,
        messages_received=running.messages_received, ingest_backlog=running.ingest_backlog,
        robotaxi_gross=totals["robotaxi_gross"], robotaxi_trips=int(totals["robotaxi_trips"]),
        earnings_net=totals["earnings_gross"] + totals["robotaxi_gross"] - totals["energy_cost"],
        cars_by_owner_mode={m: scale * n for m, n in (cars_by_owner_mode or {}).items()},
        faults_detected={kind: n for kind, n in sorted((faults_detected or {}).items()) if n > 0},
    )
