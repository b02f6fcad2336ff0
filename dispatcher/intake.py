"""What cars and gateways say about the cars: statuses, rosters, offers, withdrawals, offer frames.

A roster is applied as the per-car statuses it stands for (diffed against the block's last
roster, so an unchanged car costs a dict lookup), and an offer frame as the offers and
withdrawals it carries, in order; `dispatcher.gateways` decides which cars a gateway speaks for.
The dispatcher reads no per-car telemetry: a car's owner mode comes with its status, whether it
is parked from its offers, withdrawals and hand-backs (`leaves_park`), its rated TOPS from its
hardware generation, and its compute power from the assignments it runs (`dispatcher.watching`).
Telemetry that does arrive is still checked and taken, but nothing depends on it.
"""

from __future__ import annotations

from collections import Counter

from dispatcher.assignments import Assignments
from dispatcher.claims import Refusals, offer_refusal, telemetry_refusal
from dispatcher.clock import LedgerClock
from dispatcher.earnings import OwnersMoney
from dispatcher.gateways import UNLISTED, Gateways
from dispatcher.matchmaker import Offer
from dispatcher.offers import Offers, offer_from
from dispatcher.records import AssignmentStatus
from dispatcher.registry import IDLE, ONLINE, PARK, Car, Registry
from dispatcher.views import Out
from dispatcher.watching import Watchlist
from protocol.base import HardwareGeneration
from protocol.frames import CarRoster, OfferFrame
from protocol.power import local_seconds
from protocol.vehicle_messages import (
    ChargeState,
    ComputeOffer,
    ComputeState,
    Gear,
    Liveness,
    OfferWithdrawal,
    OwnerMode,
    SuspendReason,
    VehicleStatus,
    VehicleTelemetry,
)

GONE_SLICE = 10_000  # cars of an offline gateway taken offline per tick (about 50 ms), not 250,000 at once
SUSPENDED = "suspended: "  # how a car's withdrawal names its `SuspendReason`
LEAVING = ("driving away", SUSPENDED + SuspendReason.NOT_IN_PARK.value)
OWNER_BACK = "owner returned"  # a withdrawal or a hand-back (ShardPreempted) for the owner: the car leaves


def leaves_park(reason: str) -> bool:
    """Whether a withdrawal's or a hand-back's reason says the car is leaving its parking place."""
    return reason in LEAVING or reason.startswith(OWNER_BACK)


class CarIntake:
    """Applies what is said about cars to the registry, the offers and the running assignments."""

    def __init__(
        self, *, registry: Registry, offers: Offers, watchlist: Watchlist, assignments: Assignments,
        refusals: Refusals, money: OwnersMoney, clock: LedgerClock, faults: Counter[str],
    ) -> None:
        self.registry, self.offers, self.watchlist, self.assignments = registry, offers, watchlist, assignments
        self.refusals, self.money, self.clock, self.faults = refusals, money, clock, faults
        self.gateways = Gateways()
        self.leaving: dict[str, set[str]] = {}  # gateway gone offline -> its cars still to take offline
        self.gone_slice = GONE_SLICE

    # statuses ------------------------------------------------------------------------------
    def status(self, vid: str, message: VehicleStatus) -> list[Out]:
        """A car's own retained status."""
        return self.apply_status(vid, message.state, message.hardware, message.gateway, message.owner_id,
                                 message.owner_mode, self.clock.wall(), self.clock.now_s, message.reason)

    def apply_status(
        self, vid: str, state: Liveness, hardware: HardwareGeneration | None, gateway: str | None,
        owner_id: str | None, owner_mode: OwnerMode | None, wall: float, now_s: float, reason: str = "",
    ) -> list[Out]:
        """What a status says (from the car or a roster), at wall time `wall` and ledger time `now_s`."""
        registry = self.registry
        if self.leaving and state is ONLINE:  # a car of a gateway gone offline speaks: it stays
            for cars in self.leaving.values():
                cars.discard(vid)
        car = registry.cars.get(vid)
        if car is None:
            car = registry.join(vid, None if hardware is None else hardware.value, gateway, owner_id)
        else:
            registry.set_gateway(car, gateway)
            if hardware is not None:
                registry.set_hardware(car, hardware.value)
            if owner_id:
                car.owner_id = owner_id
        if owner_mode is not None:
            self.money.saw_mode(vid, owner_mode)
        if state is ONLINE:
            registry.heard(vid, wall)
            car.spoke_at_s = now_s
            if car.liveness is not ONLINE:
                registry.update(car, liveness=ONLINE)
            return []
        return self.car_gone(vid, state, (f"car {state.value}" + (f": {reason}" if reason else ""))[:500])  # a Text

    def car_gone(self, vid: str, liveness: Liveness, why: str) -> list[Out]:
        """The car left (offline, asleep, or no longer spoken for): its offer goes, its shards are lost."""
        car = self.registry.car(vid)
        self.registry.forget_heartbeat(vid)
        self.offers.drop(vid)
        self.registry.update(car, liveness=liveness, offering=False, compute_state=None)
        outs: list[Out] = []
        for aid in self.watchlist.take_car(vid):
            self.faults["shards_lost_car_gone"] += 1
            outs += self.assignments.lose(aid, AssignmentStatus.LOST, why, preemption=True)
        return outs

    def connection(self, gateway: str, online: bool) -> list[Out]:
        """A gateway's connection status: the heartbeat of its cars, or all of them gone with it, a slice
        now and the rest in the next ticks (`departures`)."""
        self.gateways.connection(gateway, online)
        if online:
            self.leaving.pop(gateway, None)  # back before all its cars were taken offline: the rest stay
            self.registry.heard_gateway(gateway, self.clock.wall())
            return []
        self.registry.gateway_heard.pop(gateway, None)
        self.leaving[gateway] = set(self.registry.by_gateway.get(gateway, ()))
        return self.departures()

    def departures(self, gateway: str | None = None) -> list[Out]:
        """Take up to `gone_slice` cars of gateways that went offline offline (all of `gateway`'s if named)."""
        outs: list[Out] = []
        budget = self.gone_slice
        for name in [gateway] if gateway is not None else list(self.leaving):
            cars = self.leaving.get(name, set())
            while cars and (budget > 0 or gateway is not None):
                vid = cars.pop()
                budget -= 1
                car = self.registry.cars.get(vid)
                if car is not None and car.gateway == name:  # else it moved to another gateway meanwhile
                    outs += self.car_gone(vid, Liveness.OFFLINE, f"gateway {name} offline")
            if not cars:
                self.leaving.pop(name, None)
        return outs

    # frames --------------------------------------------------------------------------------
    def roster(self, gateway: str, roster: CarRoster) -> list[Out]:
        """A block's roster: the statuses that changed since its last one, and the cars it no longer lists."""
        outs = self.departures(gateway) if gateway in self.leaving else []  # what its going offline said comes first
        diff = self.gateways.roster(gateway, roster.block, roster.cars)
        for vid in diff.refused:
            self.refusals.count("car_of_another_gateway", "roster of %s lists %s, which %s speaks for", gateway, vid,
                                self.gateways.gateway_of(vid))
        wall, now_s = self.clock.wall(), self.clock.now_s
        known, joining = self.registry.cars, []
        for entry in diff.changed:
            if entry.vehicle_id not in known and entry.state is ONLINE and not self.leaving:
                joining.append(entry)  # first heard of: joined all at once below
                continue
            outs += self.apply_status(entry.vehicle_id, entry.state, entry.hardware, gateway, entry.owner_id,
                                      entry.owner_mode, wall, now_s, entry.reason)
        if joining:
            self.registry.join_online([(entry.vehicle_id, None if entry.hardware is None else entry.hardware.value,
                                        entry.owner_id) for entry in joining], gateway, wall, now_s)
            self.money.saw_new([(entry.vehicle_id, entry.owner_mode) for entry in joining
                                if entry.owner_mode is not None])
        heard = self.registry.heard
        for vid in diff.unchanged_online:
            heard(vid, wall)
        for vid in diff.gone:
            self.registry.set_gateway(self.registry.car(vid), None)
            outs += self.car_gone(vid, Liveness.OFFLINE, f"no longer in gateway {gateway}'s roster")
        return outs

    def offer_frame(self, gateway: str, frame: OfferFrame) -> list[Out]:
        """Offers and withdrawals of a gateway's cars, in order; only for cars its rosters list."""
        outs = self.departures(gateway) if gateway in self.leaving else []  # what its going offline said comes first
        wall, now_s = self.clock.wall(), self.clock.now_s
        local_s = local_seconds(self.clock.sim_now())
        gateways, registry = self.gateways, self.registry
        bound = gateways.bound
        for item in frame.offers:
            vid = item.sender
            holder = bound.get(vid)
            if holder is None or holder[0] != gateway:
                refusal = gateways.offer_refusal(gateway, vid)
                self.refusals.count(refusal or UNLISTED, "%s from %s for %s", item.kind, gateway, vid)
                continue
            car = registry.heard(vid, wall)
            car.spoke_at_s = now_s
            if isinstance(item, ComputeOffer):
                self.offer(vid, item, now_s, local_s, car=car)
            else:
                self.withdrawal(vid, item)
        return outs

    # offers --------------------------------------------------------------------------------
    def offer(self, vid: str, message: ComputeOffer, now_s: float, local_s: float, *, save: bool = True,
              car: Car | None = None) -> None:
        """A car offers compute: it is parked and eligible; its offer stands (held while it runs our work)."""
        if vid in self.offers.unreliable:
            return
        car = car or self.registry.car(vid)
        refusal = offer_refusal(message, car.hardware)
        if refusal is not None:
            self.refusals.count(refusal, "offer of %s: %g TOPS on %s", vid, message.free_tops, message.hardware.value)
            return
        if car.hardware == "unknown":
            self.registry.set_hardware(car, message.hardware.value)
        offer = offer_from(message, vid, now_s, local_s)
        self.offers.stand(offer, car_busy=car.active_assignments > 0, save=save)
        if not car.offering or car.gear is not PARK or car.compute_state is not IDLE:
            self.registry.offers_parked(car)

    def restore(self, offer: Offer) -> None:
        """An offer the ledger kept across a restart (checked when it arrived): it stands again, unsaved."""
        if offer.vehicle_id in self.offers.unreliable:
            return
        car = self.registry.heard(offer.vehicle_id, self.clock.wall())
        self.registry.set_hardware(car, offer.hardware.value)
        self.offers.stand(offer, car_busy=car.active_assignments > 0, save=False)
        self.registry.update(car, offering=True, gear=PARK, compute_state=IDLE)

    def withdrawal(self, vid: str, message: OfferWithdrawal) -> None:
        """A car withdrew its offer: it leaves (`leaves_park`), is suspended, busy, or its process stops."""
        self.offers.drop(vid)
        car = self.registry.car(vid)
        if leaves_park(message.reason):
            self.registry.update(car, offering=False, gear=Gear.DRIVE, compute_state=None)
        elif message.reason.startswith(SUSPENDED):
            self.registry.update(car, offering=False, gear=Gear.PARK, compute_state=ComputeState.SUSPENDED)
        else:
            self.registry.update(car, offering=False)

    def handed_back(self, vid: str, reason: str) -> None:
        """A car handed its shard back: if its owner came back for it, it is leaving."""
        if leaves_park(reason):
            self.registry.update(self.registry.car(vid), offering=False, gear=Gear.DRIVE, compute_state=None)

    def telemetry(self, vid: str, message: VehicleTelemetry) -> None:
        """Telemetry, if some arrives: checked, and taken for what it says; the dispatcher does not need it."""
        refusal = telemetry_refusal(message)
        if refusal is not None:
            self.refusals.count(refusal, "telemetry of %s (%s): %g TOPS rated, %g in use, %g kW", vid,
                                message.hardware.value, message.rated_tops, message.tops_in_use,
                                message.compute_power_kw)
            return
        self.money.saw_mode(vid, message.owner_mode)
        car = self.registry.car(vid)
        self.registry.update(car, gear=message.gear, compute_state=message.compute_state,
                             hardware=message.hardware.value, rated_tops=message.rated_tops)
        on_grid = message.charge_state in (ChargeState.CHARGING, ChargeState.COMPLETE)
        if on_grid != car.on_grid:  # the energy so far was drawn from the other source
            self.registry.draw(car, car.compute_kw, self.clock.now_s, on_grid=on_grid)
        if message.gear is not Gear.PARK:
            self.offers.drop(vid)
            self.registry.update(car, offering=False)
