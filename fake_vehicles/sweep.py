"""The fleet's sweep: every car looked at in turn for what events do not bring, at a pace simulated time earns.

A car offers as soon as it has settled after parking (an event); other changes of eligibility
(charge, pack, schedule) are found by the sweep, which also sends each car's telemetry every
`telemetry_every` passes. With a million cars and hourly telemetry, checking each car every
simulated minute would take the whole CPU, so a pass takes longer as the fleet grows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol.owners import ROBOTAXI_MODES
from protocol.topics import Channel

if TYPE_CHECKING:
    from fake_vehicles.fleet import Fleet

SWEEP_PASS_S = 60.0  # eligibility is re-checked this often, or at each telemetry report if rarer


class Sweep:
    """Where the sweep is in the fleet, which pass it is on, and how many cars it may look at now."""

    def __init__(self, count: int, telemetry_interval_s: float) -> None:
        self.pass_interval = min(telemetry_interval_s, max(SWEEP_PASS_S, count / 300))
        self.telemetry_every = max(1, round(telemetry_interval_s / self.pass_interval))
        self.ptr = 0
        self.passes = 0
        self.credit = 0.0  # cars due to be looked at

    @property
    def due(self) -> int:
        return int(self.credit)

    def earn(self, cars: int, dt: float) -> None:
        """`dt` simulated seconds passed with `cars` cars: that many more are due (a pass at most)."""
        self.credit = min(cars, self.credit + cars * dt / self.pass_interval)

    def run(self, fleet: Fleet, t: float, budget: int) -> int:
        """Look at up to `budget` of `fleet`'s cars that are due at `t`; return how many were looked at."""
        n = min(budget, int(self.credit), len(fleet.cars))
        cars = fleet.cars
        count = len(cars)
        ptr = self.ptr
        telemetry = self.passes % self.telemetry_every == 0
        dropped = fleet.config.faults.dropped_signals
        encoder = fleet.encoder
        sent = 0
        for _ in range(n):
            car = cars[ptr]
            ptr += 1
            if ptr == count:
                ptr = 0
                self.passes += 1
                telemetry = self.passes % self.telemetry_every == 0
            if car.silent:
                continue
            if not car.placed:
                fleet.place(car)
            if car.shard is None:
                car.advance(t)
            reason = car.suspend_reason(t)
            if reason is None:
                if car.offer_id is None and car.shard is None:
                    fleet.offer(car)
            elif car.offer_id is not None:
                fleet.withdraw(car, f"suspended: {reason.value}")
            looked = car.owner_mode in ROBOTAXI_MODES or car.index in fleet.robotaxi.looked_at  # to forget it
            if looked and fleet.robotaxi.look(car, t, fleet.send, (encoder.sent_at, encoder.sim_time)):
                fleet.counts["robotaxi_trips"] += 1
            if telemetry and not (dropped and fleet.fault_rng.random() < dropped):
                sent += 1
                fleet.outbox.append((car.index, Channel.TELEMETRY, encoder.topic(car.vehicle_id, Channel.TELEMETRY),
                                     encoder.telemetry(car, reason, car.compute_state(reason))))
        fleet.counts["telemetry"] += sent
        self.ptr = ptr
        self.credit -= n
        return n
