"""The dispatcher's core: MQTT payloads in, ledger changes and payloads to publish out.

No I/O framework here: the async shell (`dispatcher.service`) feeds `handle(topic, payload)`
and calls `tick()` a few times a second; both return the messages to publish. The clock and
the random generator are passed in. Claims a car cannot back (TOPS beyond its hardware, other
cars' assignments, work faster than its rate) are refused and counted by reason.

The engine routes; each part has one job: the registry knows the cars, `Offers` where each
car's offer stands, the watchlist the active assignments, `Assignments` begins and ends them,
the scheduler places slots, `JobStates` republishes what changed, `LedgerClock` keeps the
ledger's time, `Refusals` counts what was refused, and the ledger keeps everything durable.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from dispatcher import jobs
from dispatcher.assignments import Assignments
from dispatcher.claims import Refusals, ShardMessage, shard_refusal
from dispatcher.clock import LedgerClock
from dispatcher.earnings import OwnersMoney
from dispatcher.intake import CarIntake
from dispatcher.ledger import Ledger
from dispatcher.matchmaker import OfferBook
from dispatcher.offers import Offers, offer_of_row
from dispatcher.records import AssignmentStatus
from dispatcher.registry import Registry
from dispatcher.scheduling import Scheduler
from dispatcher.views import SENDER, JobStates, Out, RunningWork, Throughput, fleet_summary
from dispatcher.watching import Watchlist
from protocol.base import utc_now
from protocol.codec import AnyMessage, ProtocolError, decode_on
from protocol.fleet_messages import CancelJob, FleetSummary, MatchPolicy, SetPolicy
from protocol.frames import CarRoster, OfferFrame
from protocol.job_messages import (
    JobState,
    JobStatus,
    JobSubmission,
    ShardPreempted,
    ShardProgress,
    ShardRefused,
    ShardResult,
)
from protocol.owners import RobotaxiTrip
from protocol.power import local_seconds
from protocol.topics import Channel, TopicInfo, Topics
from protocol.vehicle_messages import (
    ComputeOffer,
    ConnectionStatus,
    Liveness,
    OfferWithdrawal,
    VehicleStatus,
    VehicleTelemetry,
)

log = logging.getLogger(__name__)


class Engine:
    """The dispatcher's parts behind one message-in, messages-out interface."""

    def __init__(
        self, topics: Topics, ledger: Ledger, *, sim_now: Callable[[], datetime], wall: Callable[[], float],
        rng: random.Random, policy: MatchPolicy = MatchPolicy.FASTEST, speed: float = 1.0,
        heartbeat_timeout_s: float = 60.0, energy_price: float = 0.15, cars_per_emulated_car: int = 1,
        spot_check_rate: float = 0.1, unix: Callable[[], float] = time.time,
    ) -> None:
        self.topics, self.ledger, self.rng = topics, ledger, rng
        self.energy_price, self.spot_check_rate = energy_price, spot_check_rate
        self.cars_per_emulated_car = cars_per_emulated_car  # > 1 only to show a fleet at scale: see views.fleet_summary
        self.clock = LedgerClock(ledger, sim_now=sim_now, wall=wall, unix=unix, speed=speed)
        self.registry = Registry(heartbeat_timeout_s)
        self.offers = Offers(OfferBook(policy), ledger.unreliable_cars(jobs.UNRELIABLE_BELOW))
        self.watchlist = Watchlist(self.registry, speed, lambda: self.clock.now_s)
        self.job_states = JobStates(ledger, topics, sim_now)
        self.refusals = Refusals(ledger)
        self.assignments = Assignments(ledger, topics, self.clock, rng, registry=self.registry, offers=self.offers,
                                       watchlist=self.watchlist, job_states=self.job_states)
        self.scheduler = Scheduler(ledger, self.clock, offers=self.offers, registry=self.registry,
                                   assignments=self.assignments, job_states=self.job_states)
        self.throughput = Throughput(window_sim_s=10.0 * speed)
        self.money = OwnersMoney(ledger, topics, self.registry, self.clock, energy_price=energy_price)
        self.messages_received = 0
        self.faults_detected: Counter[str] = Counter()  # since start, for the summary's "# faults"
        self.cars = CarIntake(registry=self.registry, offers=self.offers, watchlist=self.watchlist,
                              assignments=self.assignments, refusals=self.refusals, money=self.money,
                              clock=self.clock, faults=self.faults_detected)
        self._last_summary = (wall(), 0)

    def rejections(self) -> Counter[str]:
        return self.refusals.totals()

    def startup(self) -> list[Out]:
        """Resume from the ledger: watch active assignments again and republish every job's state."""
        self.assignments.watch_active()
        for row in self.ledger.standing_offers():  # a stale one is refused by its car
            self.cars.restore(offer_of_row(row))
        local_s = local_seconds(self.clock.sim_now())
        for offer_json in self.ledger.take_legacy_offers():  # kept as JSON by an older version: saved anew
            offer = ComputeOffer.model_validate_json(offer_json)
            self.registry.heard(offer.sender, self.clock.wall())
            self.cars.offer(offer.sender, offer, self.clock.now_s, local_s)
        for job_id in self.ledger.job_ids():
            self.job_states.mark(job_id)
        return self.job_states.flush()

    # messages in ---------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> list[Out]:
        """Apply one MQTT message; a bad one is counted, logged and dropped."""
        self.messages_received += 1
        try:
            info, message = decode_on(self.topics, topic, payload)
        except ProtocolError as exc:
            self.refusals.tally(exc.reason)
            log.warning("dropped a message on %s: %s", topic, exc)
            if topic == self.topics.job_submit:
                return self._reject_raw(payload, f"{exc.reason}: {exc.detail}")
            return []
        if info.vehicle_id is not None and info.channel is not Channel.COMMANDS:
            return self._from_car(info.vehicle_id, message)
        return self._from_others(info, message)

    def _from_others(self, info: TopicInfo, message: AnyMessage) -> list[Out]:
        if isinstance(message, CarRoster) and info.client_id is not None:
            return self.cars.roster(info.client_id, message)
        if isinstance(message, OfferFrame) and info.client_id is not None:
            return self.cars.offer_frame(info.client_id, message)
        if isinstance(message, ConnectionStatus):
            if message.role != "gateway" or info.client_id is None:
                return []
            return self.cars.connection(info.client_id, message.state is Liveness.ONLINE)
        if isinstance(message, JobSubmission):
            return self._on_submission(message)
        if isinstance(message, SetPolicy):
            log.info("policy: %s", message.policy.value)
            self.offers.book.set_policy(message.policy)
            return []
        if isinstance(message, CancelJob):
            reason = message.reason or "cancelled by the operator"
            return self.assignments.end_job(message.job_id, JobStatus.CANCELLED, reason) + self.job_states.flush()
        return []

    def _from_car(self, vid: str, message: AnyMessage) -> list[Out]:
        if isinstance(message, VehicleStatus):
            return self.cars.status(vid, message)
        car = self.registry.heard(vid, self.clock.wall())
        car.spoke_at_s = now_s = self.clock.now_s
        if isinstance(message, VehicleTelemetry):
            self.cars.telemetry(vid, message)
        elif isinstance(message, ComputeOffer):
            self.cars.offer(vid, message, now_s, local_seconds(self.clock.sim_now()))
        elif isinstance(message, OfferWithdrawal):
            self.cars.withdrawal(vid, message)
        elif isinstance(message, ShardProgress | ShardResult | ShardPreempted | ShardRefused):
            return self._on_shard(vid, message)
        elif isinstance(message, RobotaxiTrip):
            self.money.trip(vid, message)
        return []

    # shards --------------------------------------------------------------------------------
    def _on_shard(self, vid: str, message: ShardMessage) -> list[Out]:
        aid = message.assignment_id
        watched = self.watchlist.get(aid)
        if watched is None or not watched.speaks_for(vid, message):
            refusal = shard_refusal(self.ledger.attempt(aid), vid, message)
            if refusal:  # claims.SETTLED (a duplicate or late message about the car's own settled assignment) is not
                self.refusals.count(refusal, "%s from %s for %s", message.kind, vid, aid)
            return []
        watched.last_heard_wall = self.clock.wall()
        self.job_states.mark(watched.job_id)
        if isinstance(message, ShardProgress):
            self.ledger.record_progress(aid, message.done_tera_ops, message.checkpoint_tera_ops, message.checkpoint,
                                        self.clock.moment())
            return []
        if isinstance(message, ShardRefused):
            return self.assignments.lose(aid, AssignmentStatus.REFUSED, message.reason, preemption=False)
        if isinstance(message, ShardPreempted):
            if self.ledger.record_preemption(message, self.energy_price, self.clock.moment()) is not None:
                self.money.paid(vid)
                self.watchlist.unwatch(aid)
                self.offers.forget_held(vid)
                self.cars.handed_back(vid, message.reason)
            return []
        return self._on_result(vid, message)

    def _on_result(self, vid: str, message: ShardResult) -> list[Out]:
        spot_check = self.rng.random() < self.spot_check_rate
        outcome = self.ledger.record_result(message, self.energy_price, self.clock.moment(), spot_check=spot_check)
        if outcome.attempt is None:
            return []
        self.watchlist.unwatch(message.assignment_id)
        self.money.changed |= self.ledger.shard_cars(message.job_id, message.shard_id)  # replicas paid on settling
        if outcome.refused is not None:  # counted in the ledger with the refusal
            self.refusals.log(outcome.refused, "result of %s for %s", vid, message.assignment_id)
        else:  # the work the ledger can credit, never the car's claim (which may say anything)
            held = outcome.attempt
            self.throughput.add(self.clock.now_s, min(message.work_tera_ops, held.shard_work - held.resume_from))
        outs = self.assignments.cancel(outcome.to_cancel, "shard settled")
        for bad in outcome.wrong_cars:
            if self.ledger.car_record(bad).reliability < jobs.UNRELIABLE_BELOW:
                log.warning("car %s had a result refused or judged wrong and gets no more work", bad)
                self.offers.bar(bad)
        self.offers.release(vid, self.clock.now_s)
        return outs

    # jobs ----------------------------------------------------------------------------------
    def _on_submission(self, job: JobSubmission) -> list[Out]:
        if self.ledger.has_job(job.job_id):
            self.job_states.mark(job.job_id)  # a resubmission: say again where the job stands
            return self.job_states.flush()
        deadline_s = None
        if job.deadline is not None:  # rebase on our clock: the submitter's clock may differ
            deadline_s = self.clock.now_s + (job.deadline - job.sim_time).total_seconds()
        reason = jobs.check_submission(job, self.clock.now_s, deadline_s)
        if reason is not None:
            return self._reject(job.job_id, job.name, reason)
        self.ledger.add_job(job, deadline_s)
        self.job_states.forget(job.job_id)
        self.job_states.mark(job.job_id)
        log.info("job %s queued: %d shards x %d", job.job_id, job.shards, job.redundancy)
        return self.job_states.flush()

    def _reject_raw(self, payload: bytes, reason: str) -> list[Out]:
        named = jobs.named_in(payload)
        return [] if named is None else self._reject(*named, reason, counted=True)  # else no job id to answer on

    def _reject(self, job_id: str, name: str, reason: str, *, counted: bool = False) -> list[Out]:
        log.warning("job %s rejected: %s", job_id, reason)
        if not counted:
            self.refusals.tally("job_rejected")
        if not self.ledger.reject_job(job_id, name, reason[:500]):
            return []
        state = JobState(sender=SENDER, sent_at=utc_now(), sim_time=self.clock.sim_now(), job_id=job_id, name=name,
                         status=JobStatus.REJECTED, reason=reason[:500])
        return [Out.on(Channel.JOB_STATE, self.topics.job_state(job_id), state)]

    # time ----------------------------------------------------------------------------------
    def tick(self) -> list[Out]:
        """Heartbeats, silent assignments, deadlines, then a scheduling round; then what must be kept."""
        now = self.clock.wall()
        outs = self.cars.departures()  # a slice of the cars of gateways gone offline
        for vid in self.registry.expire(now):
            self.faults_detected["cars_timed_out"] += 1
            outs += self.cars.car_gone(vid, Liveness.OFFLINE, "heartbeat timeout")
        for aid in self.watchlist.silent(now):
            self.faults_detected["shards_lost_car_silent"] += 1
            outs += self.assignments.lose(aid, AssignmentStatus.LOST, "no word from the car", preemption=True)
        outs += self.scheduler.run_round()
        with self.ledger.bulk():  # one transaction on the ledger's writer thread
            self.money.flush_modes()
            self.offers.save(self.ledger)
            self.refusals.flush()
            self.clock.save_if_due()
        return outs + self.job_states.flush()

    def summary(self, ingest_backlog: int = 0) -> FleetSummary:
        """The fleet summary of this moment; `ingest_backlog` is what the shell's inbound queue holds."""
        now = self.clock.wall()
        last_wall, last_count = self._last_summary
        rate = (self.messages_received - last_count) / max(1e-6, now - last_wall)
        self._last_summary = (now, self.messages_received)
        return fleet_summary(
            self.registry, self.offers.book, self.ledger, sim_time=self.clock.sim_now(),
            tops_allocated=self.watchlist.tops_allocated, throughput=self.throughput.rate(self.clock.now_s),
            messages_per_s=rate, rejected=self.rejections(), policy=self.offers.book.policy,
            cars_per_emulated_car=self.cars_per_emulated_car, running=RunningWork(
                shards=self.watchlist.shards_running, assignments=len(self.watchlist.watched),
                messages_received=self.messages_received, ingest_backlog=ingest_backlog),
            cars_by_owner_mode=self.money.mode_counts(),
            faults_detected=self.faults_detected, now_s=self.clock.now_s,
        )

    def earnings(self) -> list[Out]:
        """The ledger's earnings report and the changed cars' figures, to publish every few seconds."""
        return self.money.messages(self.clock.sim_now)

    def earnings_cars(self) -> list[Out]:
        """The owner modes heard written to the ledger, and the changed cars' figures (on the loop: cheap)."""
        return self.money.car_messages(self.clock.sim_now())

    def earnings_report(self) -> list[Out]:
        """The earnings report, summed over every car on a read-only connection of its own: run it in a thread."""
        return [self.money.report_off_loop(self.clock.sim_now())]
