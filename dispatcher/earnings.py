"""The owners' money as the dispatcher sees it: modes heard, trips booked, earnings published from the ledger.

Owner modes arrive with each car's status (or roster entry); only changes reach the ledger, in
one transaction per tick. The report sums over every car (seconds at a million): the service
builds it in a thread, on a read-only connection of its own (`report_off_loop`), never on the
loop. What the control room shows is published from the ledger alone: a retained `EarningsReport`
(fleet, per mode, top cars and owners: its size does not grow with the fleet) and, for each car
whose figures changed and are not all zero, its retained `CarEarnings` (at most `max_cars_per_flush`
a time, the rest next time), which the control room reads only for the car in view: a car that
earned nothing has no message (a million cars joining publish none).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from dispatcher.clock import LedgerClock
from dispatcher.ledger import Ledger
from dispatcher.ledger import earnings as book
from dispatcher.registry import Registry
from dispatcher.views import SENDER, Out
from protocol.base import utc_now
from protocol.owners import CarEarnings, EarningsReport, Money, RobotaxiTrip
from protocol.topics import Channel, Topics
from protocol.vehicle_messages import OwnerMode


def earned(money: Money) -> bool:
    """Whether the ledger has any money, work or trip for this car (else it has no message of its own)."""
    return bool(money.compute_gross or money.robotaxi_gross or money.energy_cost or money.compute_tops_hours
                or money.robotaxi_trips or money.robotaxi_km)


class OwnersMoney:
    """Keeps owner modes and robotaxi trips in the ledger and builds the earnings messages from it."""

    def __init__(self, ledger: Ledger, topics: Topics, registry: Registry, clock: LedgerClock, *,
                 energy_price: float, top_cars: int = 100, top_owners: int = 50,
                 max_cars_per_flush: int = 2_000) -> None:
        self.ledger, self.topics, self.registry, self.clock = ledger, topics, registry, clock
        self.energy_price, self.top_cars, self.top_owners = energy_price, top_cars, top_owners
        self.max_cars_per_flush = max_cars_per_flush
        self.modes: dict[str, OwnerMode] = {}  # as last heard from each car
        self.by_mode: Counter[OwnerMode] = Counter()
        self._pending: dict[str, OwnerMode] = {}  # heard, not yet in the ledger
        self.changed: set[str] = set()  # cars whose ledger figures changed since their last message

    def saw_mode(self, vehicle_id: str, mode: OwnerMode) -> None:
        """A car's status (or telemetry) named its owner mode: keep it if it changed."""
        old = self.modes.get(vehicle_id)
        if old is mode:
            return
        if old is not None:
            self.by_mode[old] -= 1
        self.by_mode[mode] += 1
        self.modes[vehicle_id] = self._pending[vehicle_id] = mode
        if old is not None:  # a car first heard of has no message to correct (it is published once paid)
            self.changed.add(vehicle_id)

    def saw_new(self, heard: list[tuple[str, OwnerMode]]) -> None:
        """The owner modes of cars first heard of (none known before): `saw_mode` for the lot."""
        modes, pending, fresh = self.modes, self._pending, []
        for vehicle_id, mode in heard:
            if vehicle_id in modes:  # known after all (its telemetry came first): a change, perhaps
                self.saw_mode(vehicle_id, mode)
                continue
            modes[vehicle_id] = pending[vehicle_id] = mode
            fresh.append(mode)
        self.by_mode.update(fresh)

    def flush_modes(self) -> None:
        """Write the mode changes heard since the last flush, in one transaction."""
        if not self._pending:
            return
        changes = [(vid, self.registry.car(vid).owner, mode) for vid, mode in self._pending.items()]
        self._pending.clear()
        self.ledger.set_owner_modes(changes, self.clock.now_s)

    def trip(self, vehicle_id: str, trip: RobotaxiTrip) -> None:
        """Book a reported trip, which ended at its `sim_time` on the cars' clock (refused ones are counted)."""
        if vehicle_id in self._pending:
            self.flush_modes()  # the mode the car was in when it drove must be in the ledger first
        owner = self.registry.car(vehicle_id).owner
        ends_at_s = trip.sim_time.timestamp() + self.clock.offset_s  # on the ledger's clock
        if self.ledger.record_trip(vehicle_id, owner, trip, self.energy_price, self.clock.moment(),
                                   ends_at_s) is not None:
            self.changed.add(vehicle_id)

    def paid(self, vehicle_id: str) -> None:
        """The ledger paid or charged this car: its figures are to be published again."""
        self.changed.add(vehicle_id)

    def mode_counts(self) -> dict[str, int]:
        return {mode.value: n for mode, n in self.by_mode.items() if n > 0}

    def report(self, sim_time: datetime, db: sqlite3.Connection | None = None) -> EarningsReport:
        """The ledger's earnings (on `db`; the ledger's own connection if None): fleet, modes, top cars and owners."""
        db = self.ledger.db if db is None else db
        cars, owners = book.counts(db)
        return EarningsReport(
            sender=SENDER, sent_at=utc_now(), sim_time=sim_time, fleet=book.fleet_money(db), cars=cars,
            owners=owners, by_mode=book.modes_money(db, self.clock.now_s),
            top_cars=book.cars_money(db, self.top_cars), top_owners=book.owners_money(db, self.top_owners),
        )

    def report_off_loop(self, sim_time: datetime) -> Out:
        """The report as a message, built on a read-only connection of its own: safe in another thread."""
        reader = self.ledger.reader()
        if reader is None:  # an in-memory ledger has no second connection (tests only)
            return Out.on(Channel.EARNINGS, self.topics.earnings, self.report(sim_time))
        try:
            return Out.on(Channel.EARNINGS, self.topics.earnings, self.report(sim_time, reader))
        finally:
            reader.close()

    def car_messages(self, sim_time: datetime) -> list[Out]:
        """The modes heard written, then the messages of the cars whose figures changed (a bounded number)."""
        self.flush_modes()
        outs = []
        for _ in range(min(len(self.changed), self.max_cars_per_flush)):
            vid = self.changed.pop()
            car = book.car_money(self.ledger.db, vid)
            if car is not None and earned(car.money):  # not a million retained messages of cars that earned nothing
                message = CarEarnings(sender=SENDER, sent_at=utc_now(), sim_time=sim_time, car=car)
                outs.append(Out.on(Channel.CAR_EARNINGS, self.topics.car_earnings(vid), message))
        return outs

    def messages(self, sim_now: Callable[[], datetime]) -> list[Out]:
        """The report and the changed cars' own messages, to publish (all on the caller's thread)."""
        sim_time = sim_now()
        cars = self.car_messages(sim_time)
        return [Out.on(Channel.EARNINGS, self.topics.earnings, self.report(sim_time)), *cars]
