"""Assignments begun and ended: the ledger, the watchlist, the held offers and the job states kept in step."""

from __future__ import annotations

import random

from dispatcher.clock import LedgerClock
from dispatcher.ledger import Ledger
from dispatcher.matchmaker import Offer
from dispatcher.offers import Offers
from dispatcher.records import AssignmentStatus, Attempt, Slot
from dispatcher.registry import Registry
from dispatcher.views import SENDER, JobStates, Out
from dispatcher.watching import WatchedAssignment, Watchlist
from protocol.base import utc_now
from protocol.job_messages import JobStatus, JobSubmission, ShardAssignment, ShardCancel
from protocol.topics import Channel, Topics
from protocol.vehicle_messages import Liveness

DEFAULT_CHECKPOINT_INTERVAL_S = 60.0  # for an assignment whose job the ledger no longer has


class Assignments:
    """Starts, watches, cancels and gives up assignments; each returns the messages to publish."""

    def __init__(
        self, ledger: Ledger, topics: Topics, clock: LedgerClock, rng: random.Random, *, registry: Registry,
        offers: Offers, watchlist: Watchlist, job_states: JobStates,
    ) -> None:
        self.ledger, self.topics, self.clock, self.rng = ledger, topics, clock, rng
        self.registry, self.offers, self.watchlist, self.job_states = registry, offers, watchlist, job_states
        self._assignments_made = ledger.assignment_count()  # assignment ids count on from the ledger's

    def start(self, job: JobSubmission, slot: Slot, offer: Offer, deadline_s: float | None) -> Out:
        """Give `slot` of `job` (due by `deadline_s` on the ledger's clock) to the car of `offer`, at all its TOPS."""
        self._assignments_made += 1
        aid = f"a{self._assignments_made}-{self.rng.getrandbits(32):08x}"
        # the message is built before the ledger records the attempt, so a value it cannot carry
        # fails here, with nothing recorded, rather than after the commit
        message = ShardAssignment(
            sender=SENDER, sent_at=utc_now(), sim_time=self.clock.sim_now(), assignment_id=aid,
            vehicle_id=offer.vehicle_id, job_id=job.job_id, shard_id=slot.shard_id, work_tera_ops=slot.shard_work,
            resume_from_tera_ops=min(slot.resume_from, slot.shard_work), checkpoint=slot.checkpoint,
            input_digest=slot.input_digest, allocated_tops=offer.free_tops,
            checkpoint_interval_s=job.checkpoint_interval_s, price_per_tops_hour=offer.asking_price,
            deadline=None if deadline_s is None else self.clock.on_cars_clock(deadline_s),
            car_reliability=self.ledger.car_record(offer.vehicle_id).reliability,
        )
        owner = self.registry.car(offer.vehicle_id).owner
        self.ledger.start_attempt(aid, slot, (offer.vehicle_id, owner), offer.free_tops, offer.asking_price,
                                  self.clock.now_s)
        self.offers.hold(offer)
        self._watch(aid, offer.vehicle_id, (job.job_id, slot.shard_id), offer.free_tops, job.checkpoint_interval_s)
        self.job_states.mark(job.job_id)
        return Out.on(Channel.COMMANDS, self.topics.commands(offer.vehicle_id), message)

    def watch_active(self) -> None:
        """Watch again every assignment the ledger has active (after a restart)."""
        intervals: dict[str, float] = {}
        for attempt in self.ledger.active_attempts():
            if attempt.job_id not in intervals:
                job = self.ledger.submission(attempt.job_id)
                intervals[attempt.job_id] = job.checkpoint_interval_s if job else DEFAULT_CHECKPOINT_INTERVAL_S
            self._watch(attempt.assignment_id, attempt.vehicle_id, (attempt.job_id, attempt.shard_id),
                        attempt.allocated_tops, intervals[attempt.job_id])

    def _watch(self, aid: str, vehicle_id: str, shard: tuple[str, str], tops: float, interval_s: float) -> None:
        job_id, shard_id = shard
        limit = self.watchlist.silence_limit_for(interval_s)
        self.watchlist.watch(aid, WatchedAssignment(vehicle_id, job_id, shard_id, tops, self.clock.wall(), limit))

    def cancel(self, attempts: list[Attempt], reason: str) -> list[Out]:
        """Tell the cars of `attempts` (settled in the ledger already) to stop; their offers stand again."""
        outs: list[Out] = []
        for attempt in attempts:
            if self.watchlist.unwatch(attempt.assignment_id) is not None:
                self.offers.release(attempt.vehicle_id, self.clock.now_s)
            cancel = ShardCancel(sender=SENDER, sent_at=utc_now(), sim_time=self.clock.sim_now(),
                                 assignment_id=attempt.assignment_id, vehicle_id=attempt.vehicle_id, reason=reason)
            outs.append(Out.on(Channel.COMMANDS, self.topics.commands(attempt.vehicle_id), cancel))
        return outs

    def lose(self, aid: str, status: AssignmentStatus, why: str, *, preemption: bool) -> list[Out]:
        """An assignment ends without a result: lost (counted as a preemption, if `preemption`) or refused."""
        watched = self.watchlist.get(aid)
        spoke_at_s = self.registry.car(watched.vehicle_id).spoke_at_s if watched is not None else None
        last_heard_s = None if spoke_at_s is None else min(spoke_at_s, self.clock.now_s)
        attempt = self.ledger.record_loss(aid, status, preemption=preemption, last_heard_s=last_heard_s)
        watched = self.watchlist.unwatch(aid)
        refused = status is AssignmentStatus.REFUSED
        if watched is not None:
            self.job_states.mark(watched.job_id)
            if refused:
                self.offers.forget_held(watched.vehicle_id)
        if attempt is None or refused:
            return []
        outs = self.cancel([attempt], why)
        if self.registry.car(attempt.vehicle_id).liveness is not Liveness.OFFLINE:
            self.offers.release(attempt.vehicle_id, self.clock.now_s)  # alive but silent (e.g. its result was lost)
        return outs

    def end_job(self, job_id: str, status: JobStatus, reason: str) -> list[Out]:
        """Cancel or fail an open job and withdraw its running assignments."""
        attempts = self.ledger.end_job(job_id, status, reason)
        self.job_states.mark(job_id)
        return self.cancel(attempts, reason)
