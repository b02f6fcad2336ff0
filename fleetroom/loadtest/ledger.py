"""What the observer learns during a run: cars, jobs, latencies, counters (a pure core).

Times are seconds since the run started, passed in by the caller; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetroom.loadtest.metrics import Counters, LatencyRecorder, RateMeter
from protocol import (
    CarRoster,
    Channel,
    ConnectionStatus,
    FleetSummary,
    JobState,
    JobStatus,
    Liveness,
    OfferFrame,
    ShardAssignment,
    TopicInfo,
    VehicleStatus,
)
from protocol.codec import AnyMessage

TERMINAL = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.REJECTED})


@dataclass(frozen=True)
class JobOutcome:
    """How the submitted jobs ended."""

    submitted: int
    completed: int
    unfinished: int  # queued or running when the run ended
    rejected: int
    lost: int  # failed, or never acknowledged by the dispatcher
    redone_tera_ops: float
    wrong_results_caught: int
    preemptions: int

    @property
    def completed_share(self) -> float:
        return self.completed / self.submitted if self.submitted else 1.0

    def as_dict(self) -> dict[str, float]:
        return {
            "submitted": self.submitted, "completed": self.completed, "unfinished": self.unfinished,
            "rejected": self.rejected, "lost": self.lost, "redone_tera_ops": self.redone_tera_ops,
            "wrong_results_caught": self.wrong_results_caught, "preemptions": self.preemptions,
            "completed_share": self.completed_share,
        }


class RunLedger:
    """Everything the observer saw, folded message by message."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.latency = LatencyRecorder()
        self.assignment_latency = LatencyRecorder()
        self.probe_latency = LatencyRecorder()  # the observer's messages to itself: the harness's floor
        self.rate = RateMeter()
        self.submitted: dict[str, float] = {}
        self.first_assignment: dict[str, float] = {}
        self.job_states: dict[str, JobState] = {}
        self.car_online: dict[str, bool] = {}
        self.car_gateway: dict[str, str] = {}
        self._online = 0  # how many of car_online are True
        self.last_summary: FleetSummary | None = None
        self.max_wrong_results_caught = 0
        self.max_messages_rejected = 0
        self.resubmissions = 0  # jobs sent again because the dispatcher had not answered
        self.rosters: dict[tuple[str, int], dict[str, Liveness]] = {}  # (gateway, block): its last roster
        self.offer_seq: dict[str, int] = {}  # gateway: seq of its last offer frame seen
        self.stack_peak_rss_bytes = 0  # the whole stack's resident memory at its highest sample

    # inputs -------------------------------------------------------------------------------
    def job_submitted(self, job_id: str, at_s: float) -> None:
        self.submitted.setdefault(job_id, at_s)
        self.counters.publishes += 1

    def published(self) -> None:
        self.counters.publishes += 1

    def publish_failed(self) -> None:
        self.counters.failures += 1

    def rejected(self) -> None:
        self.counters.receives += 1
        self.counters.rejected += 1

    def dropped(self) -> None:
        """The observer's incoming queue was full and a message was lost unseen."""
        self.counters.observer_dropped += 1

    def observe(self, info: TopicInfo, message: AnyMessage, at_s: float, latency_s: float | None) -> None:
        """Fold one decoded message; `latency_s` is now - sent_at, None for a retained message."""
        self.counters.receives += 1
        self.counters.count_kind(message.kind)
        self.rate.add(at_s)
        if latency_s is not None:
            self.latency.record(latency_s, at_s)
        if isinstance(message, VehicleStatus) and info.vehicle_id is not None:
            self._car_status(info.vehicle_id, message.state)
            if message.gateway is not None:
                self.car_gateway[info.vehicle_id] = message.gateway
        elif isinstance(message, ConnectionStatus) and message.role == "gateway":
            self._gateway_status(message.sender, message.state)
        elif isinstance(message, ShardAssignment):
            self._assignment(message.job_id, at_s)
        elif isinstance(message, JobState):
            self.job_states[message.job_id] = message
        elif isinstance(message, CarRoster):
            self._roster(message)
        elif isinstance(message, OfferFrame):
            self._offer_frame(message)
        elif isinstance(message, FleetSummary) and info.channel is Channel.SUMMARY:
            self.last_summary = message
            self.max_wrong_results_caught = max(self.max_wrong_results_caught, message.wrong_results_caught)
            self.max_messages_rejected = max(self.max_messages_rejected, message.messages_rejected)

    def _roster(self, roster: CarRoster) -> None:
        """Diff a block's roster against its last one: each car whose state changed, or that is gone, counts."""
        key = (roster.sender, roster.block)
        before = self.rosters.get(key, {})
        now = {car.vehicle_id: car.state for car in roster.cars}
        self.rosters[key] = now
        for car, state in now.items():
            if before.get(car) is not state:
                self.counters.state_changes += 1
                self._car_status(car, state)
                self.car_gateway[car] = roster.sender
        for car in before.keys() - now.keys():  # absent from the new roster: it has left
            if before[car] is not Liveness.OFFLINE:
                self.counters.state_changes += 1
                self._car_status(car, Liveness.OFFLINE)

    def _offer_frame(self, frame: OfferFrame) -> None:
        """Count each offer and withdrawal as its own kind; a gap in the gateway's seq is a frame missed."""
        last = self.offer_seq.get(frame.sender)
        if last is not None and frame.seq > last + 1:
            self.counters.frames_missed += frame.seq - last - 1
        self.offer_seq[frame.sender] = frame.seq  # a lower seq: the gateway process started again
        for item in frame.offers:
            self.counters.count_kind(item.kind)

    def record_stack_rss(self, rss_bytes: int) -> None:
        """One sample of the whole stack's resident memory; the peak is kept."""
        self.stack_peak_rss_bytes = max(self.stack_peak_rss_bytes, rss_bytes)

    def _car_status(self, car: str, state: Liveness) -> None:
        online = state is Liveness.ONLINE
        seen = self.car_online.get(car)
        if online and seen is not True:
            self.counters.connects += 1
            if seen is False:
                self.counters.reconnects += 1
        elif not online and seen is True:
            self.counters.failures += 1
        self._online += (online is True) - (seen is True)
        self.car_online[car] = online

    def _gateway_status(self, gateway: str, state: Liveness) -> None:
        """A fleet connection lost (its Last Will) takes its cars offline with it."""
        if state is Liveness.ONLINE:
            return
        cars = [car for car, gw in self.car_gateway.items() if gw == gateway and self.car_online.get(car)]
        if cars:
            self.counters.failures += 1
        for car in cars:
            self.car_online[car] = False
        self._online -= len(cars)

    def _assignment(self, job_id: str, at_s: float) -> None:
        if job_id in self.first_assignment:
            return
        self.first_assignment[job_id] = at_s
        submitted = self.submitted.get(job_id)
        if submitted is not None:
            self.assignment_latency.record(max(0.0, at_s - submitted), at_s)

    # views --------------------------------------------------------------------------------
    def cars_online(self) -> int:
        """Cars online now (kept as a count: the progress line asks five times a second, of a million cars)."""
        return self._online

    def online_cars(self) -> list[str]:
        return sorted(car for car, online in self.car_online.items() if online)

    def pending_jobs(self) -> list[str]:
        """Submitted jobs not yet in a terminal state."""
        return [j for j in self.submitted if (s := self.job_states.get(j)) is None or s.status not in TERMINAL]

    def lost_jobs(self) -> list[str]:
        """Submitted jobs that failed, were cancelled, or were never acknowledged."""
        lost = (JobStatus.FAILED, JobStatus.CANCELLED)
        return [j for j in self.submitted if (s := self.job_states.get(j)) is None or s.status in lost]

    def outcome(self) -> JobOutcome:
        states = [self.job_states.get(job) for job in self.submitted]
        done = sum(1 for s in states if s is not None and s.status is JobStatus.DONE)
        rejected = sum(1 for s in states if s is not None and s.status is JobStatus.REJECTED)
        failed = sum(1 for s in states if s is not None and s.status in (JobStatus.FAILED, JobStatus.CANCELLED))
        unseen = sum(1 for s in states if s is None)
        running = sum(1 for s in states if s is not None and s.status not in TERMINAL)
        known = [s for s in states if s is not None]
        # The jobs' own states, or the dispatcher's summary where it counts more (it sees every job).
        summary = self.last_summary
        wrong = max(self.max_wrong_results_caught, sum(s.wrong_results for s in known))
        redone = max(summary.redone_tera_ops if summary else 0.0, sum(s.redone_tera_ops for s in known))
        preemptions = max(summary.preemptions if summary else 0, sum(s.preemptions for s in known))
        return JobOutcome(
            submitted=len(self.submitted), completed=done, unfinished=running, rejected=rejected,
            lost=failed + unseen, redone_tera_ops=redone, wrong_results_caught=wrong, preemptions=preemptions,
        )
