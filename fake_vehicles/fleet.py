"""The cars of one fleet process, as a pure core: events in simulated time in, encoded messages out.

The caller (the runner) passes the simulation time and owns the network. The fleet turns
owner returns, departures and arrivals (a heap of each car's next event), running shards and
a round-robin sweep (eligibility, offers, telemetry) into `outbox` entries, and carries out
the commands that `fake_vehicles.commands` decoded: it starts, refuses and cancels shards.
Each entry names its channel; whoever publishes it takes QoS and retain from `DELIVERY`.
Nothing here blocks or touches a socket.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum

from fake_vehicles import ids
from fake_vehicles.car import VACATE_DEADLINE_S, Car, CarEvent, Defect
from fake_vehicles.catalogue import DEFAULT_HARDWARE_MIX
from fake_vehicles.faults import FaultConfig
from fake_vehicles.frames import GatewayFrames
from fake_vehicles.messages import Encoder
from fake_vehicles.robotaxi import Robotaxi
from fake_vehicles.sweep import Sweep
from fake_vehicles.work import RunningShard, result_digest, wrong_digest
from protocol.base import HardwareGeneration
from protocol.frames import ROSTER_BLOCK
from protocol.job_messages import ShardAssignment
from protocol.topics import Channel
from protocol.vehicle_messages import Liveness

log = logging.getLogger(__name__)

VACATE_REASON = f"owner returned: checkpointed and handed back within the {VACATE_DEADLINE_S:.0f} s vacate deadline"
NO_FAULTS = FaultConfig()
LOG_FIRST = 20  # refusals logged before only every thousandth is
Outgoing = tuple[int, Channel, str, bytes]  # (car index, channel, topic, payload)
Mix = list[tuple[float, HardwareGeneration]]


class LinkEvent(StrEnum):
    """What a car's own connection must do (per-car mode), as the runner reads `Fleet.link_events`."""

    OPEN = "open"  # connect: the car joined or was restarted
    DROP = "drop"  # vanish without a goodbye: the car went silent


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What a fleet process runs."""

    seed: int = 1
    count: int = 100  # cars in the whole fleet (all shards)
    shard_index: int = 0
    shard_count: int = 1
    mix: dict[HardwareGeneration, float] = field(default_factory=lambda: dict(DEFAULT_HARDWARE_MIX))
    faulty_share: float = 0.0
    telemetry_interval_s: float = 60.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    gateway: str | None = None  # None: one connection per car


class Fleet:
    """The cars this process runs, their next events, and the messages they have to send."""

    def __init__(self, config: FleetConfig, encoder: Encoder, rng: random.Random) -> None:
        self.config = config
        self.encoder = encoder
        self.rng = rng
        self.fault_rng = random.Random(config.seed ^ 0x5EED)
        self.cars: list[Car] = []
        self.by_id: dict[str, Car] = {}
        self.heap: list[tuple[float, int]] = []
        self.busy: dict[int, Car] = {}
        self.outbox: deque[Outgoing] = deque()
        self.link_events: deque[tuple[LinkEvent, int]] = deque()  # (event, car index), read in per-car mode
        # gateway mode: statuses and offers go out in frames (rosters, offer frames), not per car
        self.frames = GatewayFrames(encoder, config.gateway) if config.gateway is not None else None
        self.unplaced: deque[int] = deque()  # cars joined with `place=False`, waiting for `place_some`
        self.counts: Counter[str] = Counter()
        self.robotaxi = Robotaxi()
        self.total = 0  # global fleet size the pending ranges reach
        self.pending: deque[tuple[range, Mix]] = deque()
        self.reannouncing: deque[range] = deque()  # cars to announce again after a reconnect
        self.driving = 0
        self.silent = 0
        self.t = 0.0
        self.sweeper = Sweep(config.count, config.telemetry_interval_s)
        self.grow_to(config.count)

    # population ---------------------------------------------------------------------------
    def grow_to(self, total: int, mix: dict[HardwareGeneration, float] | None = None) -> None:
        """Extend the global fleet to `total` cars; this process will run its share of them."""
        if total <= self.total:
            return
        shares = [(share, gen) for gen, share in (mix or self.config.mix).items()]
        c = self.config
        self.pending.append((ids.owned_indices(self.total, total, c.shard_index, c.shard_count), shares))
        self.total = total

    @property
    def pending_cars(self) -> int:
        return sum(len(r) for r, _ in self.pending)

    def join(self, t: float, max_cars: int, *, place: bool = True) -> int:
        """Create and announce up to `max_cars` pending cars; return how many joined.

        With `place=False` a car is announced with its traits only, and placed in its owner's day
        as of `t` later (by `place_some`, `advance`, or when it is first needed): exactly where
        it would have been, so joining takes less than half the work at the moment of joining.
        """
        joined = 0
        seed, faulty, rng = self.config.seed, self.config.faulty_share, self.rng
        while self.pending and joined < max_cars:
            indices, mix = self.pending[0]
            take = indices[: max_cars - joined]
            for g in take:
                self._announce(Car.create(len(self.cars), ids.vehicle_id(seed, g), ids.car_seed(seed, g), mix,
                                          faulty, t, rng, place=place))
            joined += len(take)
            rest = indices[len(take):]
            if rest:
                self.pending[0] = (rest, mix)
            else:
                self.pending.popleft()
        return joined

    def _announce(self, car: Car) -> None:
        self.cars.append(car)
        self.by_id[car.vehicle_id] = car
        if self.frames is None:  # a car with its own connection opens it; a gateway's is open
            self.link_events.append((LinkEvent.OPEN, car.index))
        self.send_status(car, Liveness.ONLINE)
        if car.placed:
            self.driving += car.driving
            heapq.heappush(self.heap, (car.next_event_at(), car.index))
        else:
            self.unplaced.append(car.index)
        self.sweeper.credit += 1  # a new car is looked at soon

    def place_some(self, max_cars: int) -> int:
        """Place up to `max_cars` of the cars joined unplaced, oldest first; return how many."""
        unplaced, cars = self.unplaced, self.cars
        done = 0
        while unplaced and done < max_cars:
            car = cars[unplaced.popleft()]
            if not car.placed:
                self.place(car)
            done += 1
        return done

    def place(self, car: Car) -> None:
        """Place a car joined unplaced where it would be had it been placed on joining, its events up to now done."""
        car.place_at(car.t, self.rng)
        self.driving += car.driving
        while (at := car.next_event_at()) <= self.t:
            self._on_event(car, at)
        heapq.heappush(self.heap, (car.next_event_at(), car.index))

    # outgoing -----------------------------------------------------------------------------
    def send(self, car: Car, channel: Channel, payload: bytes) -> None:
        """Queue one message of `car` on one of its channels (offers: in the next offer frame, in gateway mode)."""
        if channel is Channel.OFFER and self.frames is not None:
            self.frames.offer(payload)
        else:
            self.outbox.append((car.index, channel, self.encoder.topic(car.vehicle_id, channel), payload))
        self.counts[channel] += 1

    def send_status(self, car: Car, state: Liveness, reason: str = "", *, faults: bool = True) -> None:
        """The car's status (in gateway mode: in its block's roster); `faults` lets injected faults touch it."""
        injected = self.config.faults if faults else NO_FAULTS
        if injected.missing_connectivity and self.fault_rng.random() < injected.missing_connectivity:
            self.counts["fault_missing_connectivity"] += 1
            return
        duplicate = bool(injected.duplicate_connectivity) and self.fault_rng.random() < injected.duplicate_connectivity
        if duplicate:
            self.counts["fault_duplicate_connectivity"] += 1
        if self.frames is not None:
            self.frames.status(car, state, reason)
            self.counts[Channel.VEHICLE_STATUS] += 1
            if duplicate:
                self.frames.repeats.append(car.index // ROSTER_BLOCK)
            return
        payload = self.encoder.status(car, state, reason)
        for _ in range(1 + duplicate):
            self.send(car, Channel.VEHICLE_STATUS, payload)

    def offer(self, car: Car) -> None:
        car.offer_seq += 1
        car.offer_id = f"{car.vehicle_id}-o{car.offer_seq}"
        self.send(car, Channel.OFFER, self.encoder.offer(car, car.offer_id))

    def withdraw(self, car: Car, reason: str) -> None:
        if car.offer_id is not None:
            self.send(car, Channel.OFFER, self.encoder.withdrawal(car, car.offer_id, reason))
            car.offer_id = None

    # simulated time -----------------------------------------------------------------------
    def advance(self, t: float, place_max: int | None = None) -> None:
        """Place the cars that joined unplaced (up to `place_max`), process every owner return, departure and
        arrival up to `t`, then run the busy cars."""
        if t > self.t:
            self.sweeper.earn(len(self.cars), t - self.t)
        self.t = max(self.t, t)
        self.place_some(len(self.unplaced) if place_max is None else place_max)
        heap = self.heap
        while heap and heap[0][0] <= t:
            at, index = heapq.heappop(heap)
            car = self.cars[index]
            if at != car.next_event_at():
                continue  # stale: the car's plan changed (drive-away)
            self._on_event(car, at)
            heapq.heappush(heap, (car.next_event_at(), index))
        for car in list(self.busy.values()):
            self._step_busy(car, t)

    def _on_event(self, car: Car, at: float) -> None:
        event = car.on_event(at, self.rng)
        if event is CarEvent.SETTLED:
            if not car.silent and car.offer_id is None and car.shard is None and car.suspend_reason(at) is None:
                self.offer(car)
        elif event is CarEvent.OWNER_BACK:
            if car.shard is not None:
                self.preempt(car, VACATE_REASON)
            self.withdraw(car, "owner returned")
        elif event is CarEvent.DEPART:
            self.driving += 1
            self.withdraw(car, "driving away")
            if car.silent:  # a silent car is restarted by its owner driving off
                self.restart(car)
            elif self.config.faults.silent_per_day and self.fault_rng.random() < self.config.faults.silent_per_day:
                self.counts["fault_silent"] += 1
                self.go_silent(car)
        elif event is CarEvent.ARRIVE:
            self.driving -= 1

    def _step_busy(self, car: Car, t: float) -> None:
        shard = car.shard
        assert shard is not None
        car.advance(t)
        if car.defect is Defect.VANISHES and shard.should_vanish():
            self.counts["vanished"] += 1
            self.go_silent(car)
            return
        if shard.finished:
            self._finish(car, t)
            return
        reason = car.suspend_reason(t)
        if reason is not None:
            self.preempt(car, f"suspended: {reason.value}")
        elif shard.checkpoint_due(t):
            shard.take_checkpoint(t)
            self.send(car, Channel.SHARDS, self.encoder.progress(car))

    def _finish(self, car: Car, t: float) -> None:
        shard = car.shard
        assert shard is not None
        a = shard.assignment
        if car.defect is Defect.WRONG_RESULTS:
            digest = wrong_digest(a.input_digest, a.shard_id, car.vehicle_id)
            self.counts["wrong_results"] += 1
        else:
            digest = result_digest(a.input_digest, a.shard_id)
        shard.take_checkpoint(t)
        car.earned += a.price_per_tops_hour * shard.tops * max(0.0, t - shard.started_t) / 3600.0
        self.send(car, Channel.SHARDS, self.encoder.result(car, digest, t))
        self.counts["results"] += 1
        self.release(car)

    # commands -----------------------------------------------------------------------------
    def assign(self, car: Car, a: ShardAssignment, t: float) -> None:
        """Start assignment `a` on `car` at `t`, or refuse it with the reason."""
        if not car.placed:
            self.place(car)
        if car.shard is not None and car.shard.assignment.assignment_id == a.assignment_id:
            self.counts["duplicate_assignments"] += 1  # QoS 1 redelivery
            return
        car.advance(t)
        reason = car.why_not_run(a, t, self.encoder.to_datetime(t))
        if reason is not None:
            self.refuse(car, a.assignment_id, reason)
            return
        vanish_at = None
        if car.defect is Defect.VANISHES:
            span = a.work_tera_ops - a.resume_from_tera_ops
            vanish_at = a.resume_from_tera_ops + span * self.fault_rng.uniform(0.3, 0.7)
        car.shard = RunningShard(a, min(a.allocated_tops, car.hardware.tops), t, vanish_at)
        self.busy[car.index] = car
        self.counts["accepted"] += 1
        self.withdraw(car, f"busy: running {a.assignment_id}")
        self.send(car, Channel.SHARDS, self.encoder.progress(car))  # the acknowledgement: work starts here

    def refuse(self, car: Car, assignment_id: str, reason: str) -> None:
        """Tell the dispatcher that `car` will not run `assignment_id`, and why."""
        self.counts["refused"] += 1
        n = self.counts["refused"]
        if n <= LOG_FIRST or n % 1000 == 0:
            log.info("%s refused %s: %s", car.vehicle_id, assignment_id, reason)
        self.send(car, Channel.SHARDS, self.encoder.refused(car.vehicle_id, assignment_id, reason))

    def cancel(self, car: Car, assignment_id: str) -> None:
        """Stop the car's shard if it is `assignment_id` (the dispatcher withdrew it)."""
        shard = car.shard
        if shard is None or shard.assignment.assignment_id != assignment_id:
            # Usually a race (the shard just ended here, or the cancel was redelivered): harmless.
            self.counts["stale_cancels"] += 1
            log.debug("%s has no assignment %s to cancel", car.vehicle_id, assignment_id)
            return
        self.counts["cancelled"] += 1
        self.release(car)

    def add_cars(self, count: int, mix: dict[HardwareGeneration, float] | None) -> None:
        """Grow the global fleet by `count` cars of `mix` (None: the configured one)."""
        self.counts["added_cars"] += count
        self.grow_to(self.total + count, mix)

    def preempt(self, car: Car, reason: str) -> None:
        """Checkpoint now and hand the shard back: nothing is silently dropped."""
        shard = car.shard
        assert shard is not None
        shard.take_checkpoint(car.t)
        self.send(car, Channel.SHARDS, self.encoder.preempted(car, reason))
        self.counts["preemptions"] += 1
        self.release(car)

    def release(self, car: Car) -> None:
        """The car no longer runs a shard (finished, handed back, cancelled or lost)."""
        car.shard = None
        self.busy.pop(car.index, None)

    def go_silent(self, car: Car) -> None:
        """The car stops sending (a shard it ran is lost with it) until it is restarted."""
        car.silent = True
        self.silent += 1
        car.offer_id = None
        if car.shard is not None:
            self.release(car)
        self.link_events.append((LinkEvent.DROP, car.index))
        if self.frames is not None:  # its gateway sees the connection go, as a broker publishes a car's Will
            self.send_status(car, Liveness.OFFLINE, "connection lost", faults=False)

    def restart(self, car: Car) -> None:
        car.silent = False
        self.silent -= 1
        self.link_events.append((LinkEvent.OPEN, car.index))
        self.send_status(car, Liveness.ONLINE, "restarted")

    def reannounce_all(self) -> None:
        """Queue every car for announcing again; `reannounce_some` sends them a batch at a time."""
        self.reannouncing.append(range(len(self.cars)))

    def reannounce_some(self, max_cars: int) -> int:
        done = 0
        while self.reannouncing and done < max_cars:
            indices = self.reannouncing.popleft()
            take = indices[: max_cars - done]
            for index in take:
                self.reannounce(self.cars[index])
            done += len(take)
            if len(take) < len(indices):
                self.reannouncing.appendleft(indices[len(take):])
        return done

    def reannounce(self, car: Car, reason: str = "reconnected") -> None:
        """After a (re)connect: say the car is online and offer afresh (the broker may have lost both).

        In gateway mode its roster is published again and its current offer, if any, sent again now.
        """
        if car.silent:
            return
        self.send_status(car, Liveness.ONLINE, reason)
        if self.frames is not None and car.offer_id is not None:
            self.send(car, Channel.OFFER, self.encoder.offer(car, car.offer_id))
        else:
            car.offer_id = None

    def drive_away(self, car: Car, t: float) -> None:
        """The operator sends the owner back now: vacate, then an unplanned round trip."""
        self.counts["drive_away"] += 1
        if not car.placed:
            self.place(car)
        if car.drive_away_now(t):
            if car.shard is not None:
                self.preempt(car, f"drive-away command: {VACATE_REASON}")
            self.withdraw(car, "owner returned")
            car.owner_back = True
            heapq.heappush(self.heap, (car.next_event_at(), car.index))

    # the sweep: eligibility, offers and telemetry ----------------------------------------------
    @property
    def sweep_due(self) -> int:
        return self.sweeper.due

    def sweep(self, t: float, budget: int) -> int:
        """Look at up to `budget` cars that are due (see `fake_vehicles.sweep`); return how many were looked at."""
        return self.sweeper.run(self, t, budget)

    # shutting down ------------------------------------------------------------------------
    def say_goodbye(self, cars: range) -> None:
        """Offline statuses for these cars (running shards are handed back first); silent cars say nothing."""
        for index in cars:
            car = self.cars[index]
            if car.silent:
                continue
            if car.shard is not None:
                self.preempt(car, "fleet process shutting down")
            self.withdraw(car, "fleet process shutting down")
            self.send_status(car, Liveness.OFFLINE, "fleet process stopped", faults=False)

    def summary(self) -> dict[str, int]:
        online = len(self.cars) - self.silent
        return {
            "online": online, "parked": online - self.driving, "busy": len(self.busy),
            "offering": sum(1 for c in self.cars if c.offer_id is not None) if len(self.cars) < 200_000 else -1,
        }


__all__ = ["Fleet", "FleetConfig", "LinkEvent", "Outgoing"]
