"""The dispatcher's core: MQTT payloads in, ledger changes and payloads to publish out.

No I/O framework here: the async shell (`dispatcher.service`) feeds `handle(topic, payload)`
and calls `tick()` a few times a second; both return the messages to publish. The clock and
the random generator are passed in. Claims a car cannot back (TOPS beyond its hardware, other
cars' assignments, work faster than its rate) are refused and counted by reason.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from dispatcher import jobs, results, work
from dispatcher.claims import Refusals, ShardMessage, offer_refusal, shard_refusal, telemetry_refusal
from dispatcher.credit import CLOCK_SLACK_WALL_S, Moment, clock_offset
from dispatcher.ledger import Attempt, Ledger
from dispatcher.matchmaker import Offer, OfferBook
from dispatcher.registry import Registry
from dispatcher.scheduling import Scheduler
from dispatcher.views import SENDER, Out, Throughput, fleet_summary, job_state
from dispatcher.watching import Running, Watchlist
from protocol.base import utc_now
from protocol.codec import AnyMessage, ProtocolError, decode_on, encode
from protocol.fleet_messages import CancelJob, FleetSummary, MatchPolicy, SetPolicy
from protocol.job_messages import (
    JobState,
    JobStatus,
    JobSubmission,
    ShardCancel,
    ShardPreempted,
    ShardProgress,
    ShardRefused,
    ShardResult,
)
from protocol.topics import Channel, TopicInfo, Topics
from protocol.vehicle_messages import (
    ComputeOffer,
    ConnectionStatus,
    Gear,
    Liveness,
    OfferWithdrawal,
    VehicleStatus,
    VehicleTelemetry,
)

log = logging.getLogger(__name__)


class Engine:
    """Registry, offer book and ledger behind one message-in, messages-out interface."""

    def __init__(
        self, topics: Topics, ledger: Ledger, *, sim_now: Callable[[], datetime], wall: Callable[[], float],
        rng: random.Random, policy: MatchPolicy = MatchPolicy.FASTEST, speed: float = 1.0,
        heartbeat_timeout_s: float = 60.0, energy_price: float = 0.15, cars_per_car: int = 1,
        spot_check_rate: float = 0.1, unix: Callable[[], float] = time.time,
    ) -> None:
        self.topics, self.ledger, self.sim_now, self.wall, self.unix = topics, ledger, sim_now, wall, unix
        self.cars_per_car = cars_per_car  # > 1 only to show a fleet at scale: see views.fleet_summary
        self.speed, self.energy_price, self.spot_check_rate, self.rng = speed, energy_price, spot_check_rate, rng
        self.registry = Registry(heartbeat_timeout_s)
        self.book = OfferBook(policy)
        self.held: dict[str, Offer] = {}  # offers of cars that run our work, restored when it ends
        self.watching = Watchlist(self.registry)
        self.running = self.watching.running
        self.unreliable = ledger.unreliable_cars(jobs.UNRELIABLE_BELOW)
        self.refusals = Refusals(ledger)
        self.rejected = self.refusals.pending  # refusals not yet written to the ledger (once per tick)
        self.heard_s: dict[str, float] = {}  # when each car last spoke itself (not its gateway), sim seconds
        self.clock_offset_s = clock_offset(ledger.last_clock(), sim_now().timestamp(), unix(), speed)
        self._clock_saved_wall = -1e18
        self.received = 0
        self.dirty: set[str] = set()
        self.offer_changes: dict[str, str | None] = {}  # written to the ledger once per tick
        self.throughput = Throughput(window_sim_s=10.0 * speed)
        self.scheduler = Scheduler(self, rng)
        self._last_summary = (wall(), 0)

    @property
    def now_s(self) -> float:
        """The ledger's simulation seconds: the clock, continued across a restart that did not share
        `--sim-epoch` (see `credit.clock_offset`)."""
        return self.sim_now().timestamp() + self.clock_offset_s

    def moment(self) -> Moment:
        return Moment(self.now_s, CLOCK_SLACK_WALL_S * self.speed)

    def refuse(self, reason: str, what: str, *args: object) -> None:
        self.refusals.count(reason, what, *args)

    def rejections(self) -> Counter[str]:
        return self.refusals.totals()

    # start-up ------------------------------------------------------------------------------
    def startup(self) -> list[Out]:
        """Resume from the ledger: watch active assignments again and republish every job's state."""
        now = self.wall()
        for attempt in self.ledger.active_attempts():
            self._watch(attempt.assignment_id, attempt.vehicle_id, (attempt.job_id, attempt.shard_id),
                        attempt.allocated_tops, now)
        for offer_json in self.ledger.standing_offers():
            offer = ComputeOffer.model_validate_json(offer_json)  # a stale one is refused by its car
            self.registry.heard(offer.sender, now)
            self._on_offer(offer.sender, offer, save=False)
        for (job_id,) in self.ledger.db.execute("SELECT job_id FROM jobs").fetchall():
            self.dirty.add(str(job_id))
        return self.flush_states()

    def _watch(self, aid: str, vehicle_id: str, shard: tuple[str, str], tops: float, now: float) -> None:
        job_id, shard_id = shard
        job = self.scheduler.submission(job_id)
        interval = job.checkpoint_interval_s if job else 60.0
        limit = max(self.registry.heartbeat_timeout_s, 3.0 * interval / self.speed)
        self.watching.watch(aid, Running(vehicle_id, job_id, shard_id, tops, now, limit))

    def _unwatch(self, aid: str) -> Running | None:
        return self.watching.unwatch(aid)

    # messages in ---------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> list[Out]:
        """Apply one MQTT message; a bad one is counted, logged and dropped."""
        self.received += 1
        try:
            info, message = decode_on(self.topics, topic, payload)
        except ProtocolError as exc:
            self.rejected[exc.reason] += 1
            log.warning("dropped a message on %s: %s", topic, exc)
            if topic == self.topics.job_submit:
                return self._reject_raw(payload, f"{exc.reason}: {exc.detail}")
            return []
        return self._route(info, message)

    def _route(self, info: TopicInfo, message: AnyMessage) -> list[Out]:
        vid = info.vehicle_id
        if vid is not None and info.channel is not Channel.COMMANDS:
            if isinstance(message, VehicleStatus):
                return self._on_status(vid, message)
            car = self.registry.heard(vid, self.wall())
            self.heard_s[vid] = self.now_s
            if isinstance(message, VehicleTelemetry):
                self._on_telemetry(vid, message)
            elif isinstance(message, ComputeOffer):
                self._on_offer(vid, message)
            elif isinstance(message, OfferWithdrawal):
                self._drop_offer(vid)
                self.registry.update(car, offering=False)
            elif isinstance(message, ShardProgress | ShardResult | ShardPreempted | ShardRefused):
                return self._on_shard(vid, message)
            return []
        if isinstance(message, ConnectionStatus):
            return self._on_connection(info, message)
        if isinstance(message, JobSubmission):
            return self._on_submission(message)
        if isinstance(message, SetPolicy):
            log.info("policy: %s", message.policy.value)
            self.book.set_policy(message.policy)
            return []
        if isinstance(message, CancelJob):
            return self.end_job(message.job_id, "cancelled", message.reason or "cancelled by the operator")
        return []

    # cars ----------------------------------------------------------------------------------
    def _on_status(self, vid: str, message: VehicleStatus) -> list[Out]:
        car = self.registry.car(vid)
        self.registry.set_gateway(car, message.gateway)
        if message.hardware is not None:
            self.registry.update(car, hardware=message.hardware.value)
        if message.owner_id:
            car.owner_id = message.owner_id
        if message.state is Liveness.ONLINE:
            self.registry.heard(vid, self.wall())
            self.heard_s[vid] = self.now_s
            self.registry.update(car, liveness=Liveness.ONLINE)
            return []
        return self._car_gone(vid, message.state, f"car {message.state.value}")

    def _car_gone(self, vid: str, liveness: Liveness, why: str) -> list[Out]:
        car = self.registry.car(vid)
        self.registry.forget_heartbeat(vid)
        self._drop_offer(vid)
        self.registry.update(car, liveness=liveness, offering=False)
        outs: list[Out] = []
        for aid in self.watching.take_car(vid):
            outs += self._lose(aid, "lost", why, preemption=True)
        return outs

    def _on_connection(self, info: TopicInfo, message: ConnectionStatus) -> list[Out]:
        if message.role != "gateway" or info.client_id is None:
            return []
        if message.state is Liveness.ONLINE:
            # a gateway's periodic status is the heartbeat of every car it speaks for
            now = self.wall()
            for vid in self.registry.gateway_cars(info.client_id):
                if self.registry.car(vid).liveness is not Liveness.OFFLINE:
                    self.registry.heard(vid, now)
            return []
        outs: list[Out] = []
        for vid in self.registry.gateway_cars(info.client_id):
            outs += self._car_gone(vid, Liveness.OFFLINE, f"gateway {info.client_id} offline")
        return outs

    def _on_telemetry(self, vid: str, message: VehicleTelemetry) -> None:
        refusal = telemetry_refusal(message)
        if refusal is not None:
            self.refuse(refusal, "telemetry of %s: %g TOPS rated on %s", vid, message.rated_tops,
                        message.hardware.value)
            return
        car = self.registry.car(vid)
        self.registry.update(
            car, gear=message.gear, compute_state=message.compute_state, hardware=message.hardware.value,
            rated_tops=message.rated_tops,
        )
        if message.gear is not Gear.PARK:
            self._drop_offer(vid)
            self.registry.update(car, offering=False)

    def _on_offer(self, vid: str, message: ComputeOffer, *, save: bool = True) -> None:
        if vid in self.unreliable:
            return
        car = self.registry.car(vid)
        refusal = offer_refusal(message, car.hardware)
        if refusal is not None:
            self.refuse(refusal, "offer of %s: %g TOPS on %s", vid, message.free_tops, message.hardware.value)
            return
        if save:
            self.offer_changes[vid] = message.model_dump_json()
        now_s = self.now_s  # times are rebased on our clock: the car's may be set differently
        offer = Offer(
            vehicle_id=vid, offer_id=message.offer_id, hardware=message.hardware, free_tops=message.free_tops,
            price_per_tops_hour=message.price_per_tops_hour, offered_at_s=now_s,
            departure_at_s=now_s + (message.expected_departure - message.sim_time).total_seconds(),
            departure_confidence=message.departure_confidence, energy_budget_kwh=message.energy_budget_kwh,
            soc=message.soc, min_price_per_tops_hour=message.requirements.min_price_per_tops_hour,
            max_shard_hours=message.requirements.max_shard_hours,
        )
        if car.hardware == "unknown":
            self.registry.update(car, hardware=message.hardware.value)
        if car.running > 0:
            self.held[vid] = offer  # one shard per car: the offer waits until the car is free
        else:
            self.book.put(offer)
        self.registry.update(car, offering=True)

    def _drop_offer(self, vid: str) -> None:
        in_book = self.book.remove(vid) is not None
        if self.held.pop(vid, None) is not None or in_book:
            self.offer_changes[vid] = None

    def restore_offer(self, vid: str) -> None:
        offer = self.held.pop(vid, None)
        if offer is not None and vid not in self.unreliable and offer.departure_at_s > self.now_s:
            self.book.put(offer)

    # shards --------------------------------------------------------------------------------
    def _on_shard(self, vid: str, message: ShardMessage) -> list[Out]:
        watched = self.running.get(message.assignment_id)
        if watched is None or not watched.speaks_for(vid, message):
            refusal = shard_refusal(self.ledger.attempt(message.assignment_id), vid, message)
            if refusal:  # claims.SETTLED (a duplicate or late message about the car's own settled assignment) is not
                self.refuse(refusal, "%s from %s for %s", message.kind, vid, message.assignment_id)
            return []
        watched.last_heard_wall = self.wall()
        self.dirty.add(watched.job_id)
        if isinstance(message, ShardProgress):
            work.on_progress(self.ledger, message.assignment_id, message.done_tera_ops,
                             message.checkpoint_tera_ops, message.checkpoint, self.moment())
            return []
        if isinstance(message, ShardRefused):
            return self._lose(message.assignment_id, "refused", message.reason, preemption=False)
        if isinstance(message, ShardPreempted):
            if work.on_preempted(self.ledger, message, self.energy_price, self.moment()) is not None:
                self._unwatch(message.assignment_id)
                self.held.pop(vid, None)
            return []
        return self._on_result(vid, message)

    def _on_result(self, vid: str, message: ShardResult) -> list[Out]:
        spot_check = self.rng.random() < self.spot_check_rate
        outcome = results.on_result(self.ledger, message, self.energy_price, self.moment(), spot_check=spot_check)
        if outcome.attempt is None:
            return []
        self._unwatch(message.assignment_id)
        if outcome.refused is not None:  # counted in the ledger with the refusal
            self.refusals.log(outcome.refused, "result of %s for %s", vid, message.assignment_id)
        else:
            self.throughput.add(self.now_s, message.work_tera_ops)
        outs = self.cancel_attempts(outcome.to_cancel, "shard settled")
        for bad in outcome.wrong_cars:
            if self.ledger.car_record(bad)[2] < jobs.UNRELIABLE_BELOW:
                log.warning("car %s had a result refused or judged wrong and gets no more work", bad)
                self.unreliable.add(bad)
                self._drop_offer(bad)
        self.restore_offer(vid)
        return outs

    def _lose(self, aid: str, status: str, why: str, *, preemption: bool) -> list[Out]:
        info = self.running.get(aid)
        heard = self.heard_s.get(info.vehicle_id) if info is not None else None
        attempt = work.on_lost(self.ledger, aid, status, preemption=preemption,
                               last_heard_s=None if heard is None else min(heard, self.now_s))
        info = self._unwatch(aid)
        if info is not None:
            self.dirty.add(info.job_id)
            if status == "refused":
                self.held.pop(info.vehicle_id, None)
        if attempt is None or status == "refused":
            return []
        outs = self.cancel_attempts([attempt], why)
        if self.registry.car(attempt.vehicle_id).state != "offline":
            self.restore_offer(attempt.vehicle_id)  # alive but silent (e.g. its result was lost)
        return outs

    def cancel_attempts(self, attempts: list[Attempt], reason: str) -> list[Out]:
        outs: list[Out] = []
        for attempt in attempts:
            if self._unwatch(attempt.assignment_id) is not None:
                self.restore_offer(attempt.vehicle_id)
            cancel = ShardCancel(sender=SENDER, sent_at=utc_now(), sim_time=self.sim_now(),
                                 assignment_id=attempt.assignment_id, vehicle_id=attempt.vehicle_id, reason=reason)
            outs.append(Out(self.topics.commands(attempt.vehicle_id), encode(cancel)))
        return outs

    # jobs ----------------------------------------------------------------------------------
    def _on_submission(self, job: JobSubmission) -> list[Out]:
        if self.ledger.one("SELECT 1 FROM jobs WHERE job_id = ? AND status != 'rejected'", job.job_id):
            self.dirty.add(job.job_id)  # a resubmission: say again where the job stands
            return self.flush_states()
        deadline_s = None
        if job.deadline is not None:  # rebase on our clock: the submitter's clock may differ
            deadline_s = self.now_s + (job.deadline - job.sim_time).total_seconds()
        reason = self.scheduler.check(job, deadline_s)
        if reason is not None:
            return self._reject(job.job_id, job.name, reason)
        work.add_job(self.ledger, job, deadline_s)
        self.scheduler.forget(job.job_id)
        self.dirty.add(job.job_id)
        log.info("job %s queued: %d shards x %d", job.job_id, job.shards, job.redundancy)
        return self.flush_states()

    def _reject_raw(self, payload: bytes, reason: str) -> list[Out]:
        named = jobs.named_in(payload)
        return [] if named is None else self._reject(*named, reason, counted=True)  # else no job id to answer on

    def _reject(self, job_id: str, name: str, reason: str, *, counted: bool = False) -> list[Out]:
        log.warning("job %s rejected: %s", job_id, reason)
        if not counted:
            self.rejected["job_rejected"] += 1
        if not work.record_rejection(self.ledger, job_id, name, reason[:500]):
            return []
        state = JobState(sender=SENDER, sent_at=utc_now(), sim_time=self.sim_now(), job_id=job_id, name=name,
                         status=JobStatus.REJECTED, reason=reason[:500])
        return [Out(self.topics.job_state(job_id), encode(state), retain=True)]

    def end_job(self, job_id: str, status: str, reason: str) -> list[Out]:
        attempts = work.end_job(self.ledger, job_id, status, reason)
        self.dirty.add(job_id)
        return self.cancel_attempts(attempts, reason) + self.flush_states()

    def flush_states(self) -> list[Out]:
        """Publish the retained state of every job that changed."""
        outs: list[Out] = []
        for job_id in sorted(self.dirty):
            try:
                state = job_state(self.ledger, job_id, self.sim_now(), self.scheduler.wait_reasons.get(job_id, ()))
            except KeyError:
                continue
            outs.append(Out(self.topics.job_state(job_id), encode(state), retain=True))
        self.dirty.clear()
        return outs

    # time ----------------------------------------------------------------------------------
    def tick(self) -> list[Out]:
        """Heartbeats, silent assignments, deadlines, then a scheduling round."""
        now = self.wall()
        outs: list[Out] = []
        for vid in self.registry.expire(now):
            outs += self._car_gone(vid, Liveness.OFFLINE, "heartbeat timeout")
        for aid in self.watching.silent(now):
            outs += self._lose(aid, "lost", "no word from the car", preemption=True)
        outs += self.scheduler.run_round()
        if self.offer_changes:
            self.ledger.save_offers(self.offer_changes)
            self.offer_changes = {}
        self.refusals.flush()
        if now - self._clock_saved_wall >= 1.0:
            self._clock_saved_wall = now
            self.ledger.save_clock(self.now_s, self.unix())
        return outs + self.flush_states()

    def summary(self) -> FleetSummary:
        now = self.wall()
        last_wall, last_count = self._last_summary
        rate = (self.received - last_count) / max(1e-6, now - last_wall)
        self._last_summary = (now, self.received)
        return fleet_summary(
            self.registry, self.book, self.ledger, sim_time=self.sim_now(), tops_allocated=self.watching.tops_allocated,
            throughput=self.throughput.rate(self.now_s), messages_per_s=rate,
            rejected=self.rejections(), policy=self.book.policy, cars_per_car=self.cars_per_car,
        )

