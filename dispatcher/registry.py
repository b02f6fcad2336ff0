"""The fleet registry: what each car is doing, kept with running counts so a summary costs O(1).

A car's state is one of offline, asleep, online (heard, nothing more known yet), idle (parked,
eligible and offering), busy, vacating, driving or suspended. Liveness comes from the retained
status (a car's or its gateway's Last Will) and from a heartbeat timeout: cars not heard from
for `heartbeat_timeout_s` wall seconds are offline. Expiry walks an insertion-ordered dict from
its oldest end, so it never scans the fleet; a tick looks at `EXPIRE_SLICE` cars at most, and the
queue is an `OrderedDict`, whose oldest end is found in O(1) (a plain dict emptied from the
front must skip every slot freed before: a million cars moved to the back in one tick took
tens of seconds, and stopped the dispatcher's loop long enough for the broker to drop it).

Compute power is what the dispatcher's own assignments draw (allocated TOPS under
`protocol.power`, the model the fleet runs on), not what telemetry says: the dispatcher reads
no per-car telemetry. Energy is integrated from each car's power between two changes of it.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass

from protocol.vehicle_messages import HARDWARE_TOPS, ComputeState, Gear, Liveness
from protocol.vocabulary import CarState

RATED_TOPS: dict[str, float] = {generation.value: tops for generation, tops in HARDWARE_TOPS.items()}
ONLINE, OFFLINE, PARK = Liveness.ONLINE, Liveness.OFFLINE, Gear.PARK  # reading an enum member costs a descriptor call
VACATING, BUSY, SUSPENDED, IDLE = ComputeState.VACATING, ComputeState.BUSY, ComputeState.SUSPENDED, ComputeState.IDLE
EXPIRE_SLICE = 20_000  # cars `expire` looks at per call (a tick): a million due at once take 50 ticks, not one long one
COUNTED_FIELDS = frozenset({"liveness", "hardware", "rated_tops", "compute_kw", "on_grid"})
"""The fields of a car that the counts of cars online (`Registry._count_online`) depend on."""


@dataclass(slots=True)
class Car:
    """What the dispatcher knows of one car."""

    vehicle_id: str
    liveness: Liveness = Liveness.ONLINE
    state: CarState = CarState.ONLINE
    hardware: str = "unknown"
    rated_tops: float = 0.0
    owner_id: str = ""
    gateway: str | None = None
    gear: Gear = Gear.PARK
    compute_state: ComputeState | None = None
    offering: bool = False
    active_assignments: int = 0  # assignments the dispatcher gave it that still run
    spoke_at_s: float | None = None  # when it last spoke itself (not its gateway), the ledger's simulation seconds
    compute_kw: float = 0.0  # compute power of the assignments it runs (protocol.power)
    on_grid: bool = False  # on a charger as its last telemetry said (none: counted as battery)
    metered_at_s: float | None = None  # since when it draws compute_kw, the ledger's simulation seconds

    @property
    def owner(self) -> str:
        return self.owner_id or self.vehicle_id


def derive_state(car: Car) -> CarState:
    """The one state a car is counted under (`protocol.vocabulary.CarState`)."""
    if car.liveness is not ONLINE:
        return CarState(car.liveness)
    if car.gear is not PARK:
        return CarState.DRIVING
    compute = car.compute_state
    if compute is VACATING:
        return CarState.VACATING
    if car.active_assignments > 0 or compute is BUSY:
        return CarState.BUSY
    if compute is SUSPENDED:
        return CarState.SUSPENDED
    if car.offering or compute is IDLE:
        return CarState.IDLE
    return CarState.ONLINE


class Registry:
    """Every car heard of, its state, and counts by state and hardware kept up to date."""

    def __init__(self, heartbeat_timeout_s: float = 60.0) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.cars: dict[str, Car] = {}
        self.by_state: Counter[CarState] = Counter()
        self.by_hardware: Counter[str] = Counter()  # cars online, by generation
        self.tops_by_hardware: defaultdict[str, float] = defaultdict(float)  # rated TOPS of cars online
        self.by_gateway: dict[str, set[str]] = {}
        self.compute_kw = 0.0  # of cars online, drawn by the assignments they run
        self.compute_kw_from_grid = 0.0
        self.energy_kwh = {"battery": 0.0, "grid": 0.0}  # compute energy drawn up to each car's last change
        self._drawing: set[str] = set()  # cars whose power is above zero: their energy since is open
        self._last_heard: OrderedDict[str, float] = OrderedDict()  # oldest first (give or take a timeout)
        self.gateway_heard: dict[str, float] = {}  # a gateway's heartbeat is that of every car it speaks for

    def car(self, vehicle_id: str) -> Car:
        """The record of `vehicle_id`, created (online) if new."""
        car = self.cars.get(vehicle_id)
        if car is None:
            car = Car(vehicle_id)
            self.cars[vehicle_id] = car
            self.by_state[car.state] += 1
            self._count_online(car, +1)
        return car

    def join(self, vehicle_id: str, hardware: str | None, gateway: str | None, owner_id: str | None) -> Car:
        """A car first heard of in a status: created with what it says, counted once."""
        car = Car(vehicle_id, owner_id=owner_id or "")
        if hardware is not None:
            car.hardware, car.rated_tops = hardware, RATED_TOPS.get(hardware, 0.0)
        self.cars[vehicle_id] = car
        self.by_state[car.state] += 1
        self._count_online(car, +1)
        self.set_gateway(car, gateway)
        return car

    def join_online(self, joining: list[tuple[str, str | None, str | None]], gateway: str, now_wall: float,
                    now_s: float) -> None:
        """Cars first heard of, online, in one roster of `gateway`: (vehicle, hardware, owner) each, none known yet.

        What `join` then `heard` do for each, with the counts added once for the lot: a fleet joining
        is a million of these.
        """
        cars, last_heard, rated = self.cars, self._last_heard, RATED_TOPS
        members = self.by_gateway.setdefault(gateway, set())
        generations: Counter[str] = Counter()
        for vehicle_id, hardware, owner_id in joining:
            generation = hardware or "unknown"
            cars[vehicle_id] = Car(vehicle_id, ONLINE, CarState.ONLINE, generation, rated.get(generation, 0.0),
                                   owner_id or "", gateway, spoke_at_s=now_s)
            last_heard[vehicle_id] = now_wall
            members.add(vehicle_id)
            generations[generation] += 1
        self.by_state[CarState.ONLINE] += len(joining)
        for generation, count in generations.items():
            self.by_hardware[generation] += count
            self.tops_by_hardware[generation] += count * rated.get(generation, 0.0)

    def heard(self, vehicle_id: str, now_wall: float) -> Car:
        """A car spoke: it is alive now."""
        car = self.cars.get(vehicle_id) or self.car(vehicle_id)
        last_heard = self._last_heard
        last_heard.pop(vehicle_id, None)  # to the back of the queue
        last_heard[vehicle_id] = now_wall
        if car.liveness is OFFLINE:
            self.update(car, liveness=ONLINE)
        return car

    def update(self, car: Car, **changes: object) -> None:
        """Change fields of `car` and keep every count right."""
        old_state = car.state
        counted = not COUNTED_FIELDS.isdisjoint(changes)  # most changes (offering, gear) leave them as they are
        if counted:
            self._count_online(car, -1)
        for name, value in changes.items():
            setattr(car, name, value)
        car.state = derive_state(car)
        if counted:
            self._count_online(car, +1)
        if car.state != old_state:
            self.by_state[old_state] -= 1
            self.by_state[car.state] += 1

    def offers_parked(self, car: Car) -> None:
        """The car offers compute: parked, idle and offering (what `update` would do, without its generality)."""
        old_state = car.state
        car.offering, car.gear, car.compute_state = True, PARK, IDLE
        car.state = new_state = derive_state(car)
        if new_state is not old_state:
            self.by_state[old_state] -= 1
            self.by_state[new_state] += 1

    def set_hardware(self, car: Car, hardware: str) -> None:
        """The car's generation is known: its rated TOPS are the catalogue's (`HARDWARE_TOPS`)."""
        if car.hardware != hardware:
            self.update(car, hardware=hardware, rated_tops=RATED_TOPS.get(hardware, 0.0))

    def draw(self, car: Car, compute_kw: float, now_s: float, on_grid: bool | None = None) -> None:
        """The car's compute power changes at `now_s` (an assignment began or ended): close its energy since
        its last change, then draw `compute_kw` (from the grid if `on_grid`, unchanged if None)."""
        if car.metered_at_s is not None:
            hours = max(0.0, now_s - car.metered_at_s) / 3600.0
            self.energy_kwh["grid" if car.on_grid else "battery"] += car.compute_kw * hours
        grid = car.on_grid if on_grid is None else on_grid
        drawing = compute_kw > 0.0
        self.update(car, compute_kw=compute_kw, on_grid=grid, metered_at_s=now_s if drawing else None)
        if drawing:
            self._drawing.add(car.vehicle_id)
        else:
            self._drawing.discard(car.vehicle_id)

    def energy_drawn(self, now_s: float) -> dict[str, float]:
        """Compute energy drawn up to `now_s`, by source: closed stretches plus those still running."""
        drawn = dict(self.energy_kwh)
        for vehicle_id in self._drawing:
            car = self.cars[vehicle_id]
            if car.metered_at_s is not None:
                hours = max(0.0, now_s - car.metered_at_s) / 3600.0
                drawn["grid" if car.on_grid else "battery"] += car.compute_kw * hours
        return drawn

    def set_gateway(self, car: Car, gateway: str | None) -> None:
        if car.gateway == gateway:
            return
        if car.gateway is not None:
            self.by_gateway.get(car.gateway, set()).discard(car.vehicle_id)
        if gateway is not None:
            self.by_gateway.setdefault(gateway, set()).add(car.vehicle_id)
        car.gateway = gateway

    def heard_gateway(self, gateway: str, now_wall: float) -> None:
        """A gateway's heartbeat: its cars count as heard now (looked at lazily, by `expire`)."""
        self.gateway_heard[gateway] = now_wall

    def expire(self, now_wall: float, budget: int = EXPIRE_SLICE) -> list[str]:
        """Cars not heard from within the heartbeat timeout, nor their gateway: mark them offline and return them.

        A car whose gateway was heard since goes to the back of the queue with the gateway's time,
        so a heartbeat costs nothing per car and each car is looked at about once per timeout. At
        most `budget` cars are looked at; the rest are looked at in the next calls.
        """
        gone: list[str] = []
        limit = now_wall - self.heartbeat_timeout_s
        last_heard, gateway_heard, cars = self._last_heard, self.gateway_heard, self.cars
        for _ in range(budget):
            if not last_heard:
                break
            vehicle_id = next(iter(last_heard))  # O(1) on an OrderedDict
            if last_heard[vehicle_id] > limit:
                break
            car = cars[vehicle_id]
            gateway_at = gateway_heard.get(car.gateway) if car.gateway is not None else None
            if gateway_at is not None and gateway_at > limit:
                last_heard[vehicle_id] = gateway_at
                last_heard.move_to_end(vehicle_id)
                continue
            del last_heard[vehicle_id]
            if car.liveness is not Liveness.OFFLINE:
                self.update(car, liveness=Liveness.OFFLINE, offering=False)
                gone.append(vehicle_id)
        return gone

    def forget_heartbeat(self, vehicle_id: str) -> None:
        self._last_heard.pop(vehicle_id, None)

    @property
    def online_count(self) -> int:
        return len(self.cars) - self.by_state[CarState.OFFLINE] - self.by_state[CarState.ASLEEP]

    def state_counts(self) -> dict[str, int]:
        """Cars by state; `online` counts every car that is reachable, whatever it does."""
        counts = {state.value: self.by_state[state] for state in CarState}
        counts["online"] = self.online_count
        return counts

    def _count_online(self, car: Car, sign: int) -> None:
        if car.liveness is ONLINE:
            self.by_hardware[car.hardware] += sign
            self.tops_by_hardware[car.hardware] += sign * car.rated_tops
            if car.compute_kw:
                self.compute_kw += sign * car.compute_kw
                self.compute_kw_from_grid += sign * car.compute_kw * car.on_grid
