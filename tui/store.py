"""The control room's fleet store: a plain model of everything heard on the wire.

The MQTT worker calls `ingest` once per message; a timer in the app reads the store and paints.
Nothing here imports Textual or an MQTT client, and time is always passed in (monotonic
seconds), so the store is tested on its own and benchmarked with a million cars.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from protocol import (
    AnyMessage,
    CarState,
    ComputeOffer,
    ConnectionStatus,
    FleetSummary,
    Gear,
    JobState,
    JobSubmission,
    Liveness,
    OfferWithdrawal,
    ProtocolError,
    ShardAssignment,
    ShardCancel,
    ShardPreempted,
    ShardProgress,
    ShardRefused,
    ShardResult,
    TopicInfo,
    Topics,
    VehicleStatus,
    VehicleTelemetry,
    decode_on,
    dispatcher_online,
)
from protocol.fleet_messages import utilisation
from protocol.frames import CarRoster, OfferFrame
from protocol.owners import CarEarnings, EarningsReport
from tui.earnings import EarningsBook
from tui.gateways import GatewayFrames
from tui.jobs import JobBook

log = logging.getLogger(__name__)

STATE_ORDER: tuple[str, ...] = tuple(state.code for state in CarState)
"""The two-letter state codes in the order a compact listing shows them."""
HISTORY_SERIES: tuple[str, ...] = ("cars", "tops_offered", "tops_allocated", "earnings", "msgs_per_s",
                                   "jobs_queued", "jobs_running", "utilisation_pct", "earnings_net")


@dataclass(slots=True)
class CarRow:
    """What the control room knows of one car, updated in place."""

    vehicle_id: str
    state: CarState = CarState.ONLINE
    liveness: Liveness = Liveness.ONLINE
    hardware: str = ""
    soc: float | None = None
    rated_tops: float = 0.0
    tops_in_use: float = 0.0
    offered_tops: float = 0.0
    shard: str = ""
    job_id: str = ""
    reason: str = ""
    earned: float | None = None  # the ledger's gross, when the dispatcher has published it for this car
    reliability: float | None = None  # the dispatcher's ledger score, as of its last assignment to this car
    gateway: str = ""
    offer_id: str = ""
    price_per_tops_hour: float | None = None
    expected_departure: datetime | None = None
    departure_confidence: float | None = None
    checkpoint_tera_ops: float = 0.0
    done_tera_ops: float = 0.0
    work_tera_ops: float = 0.0
    last_event: str = ""
    frame_gateway: str = ""  # the gateway whose rosters speak for the car (the first to list it)
    frame_block: int = -1  # the block of that gateway's rosters listing it now; -1: not listed
    telemetry_live: bool = False  # its telemetry is subscribed and has arrived since (else shown greyed)

    @property
    def code(self) -> str:
        """The car's state as its two-letter code."""
        return self.state.code

    @property
    def free_tops(self) -> float:
        """TOPS the car could still give: what it offers, else its idle rating."""
        if self.offered_tops > 0:
            return self.offered_tops
        return max(self.rated_tops - self.tops_in_use, 0.0) if self.state is CarState.IDLE else 0.0


@dataclass(frozen=True, slots=True)
class TelemetryPoint:
    """One sample of a car's telemetry history, for the drill-down."""

    sim_time: datetime
    soc: float
    tops_in_use: float
    earned: float
    pack_temp_c: float
    state: CarState


@dataclass
class LinkStatus:
    """The control room's own connection, as the MQTT worker last reported it."""

    state: str = "connecting"
    reason: str = ""
    attempt: int = 0
    reconnects: int = 0


@dataclass
class History:
    """Ring buffers of fleet-wide figures, one sample per `sample_every_s`."""

    length: int = 120
    series: dict[str, deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.series = {name: deque(maxlen=self.length) for name in HISTORY_SERIES}

    def append(self, values: dict[str, float]) -> None:
        for name, buffer in self.series.items():
            buffer.append(values.get(name, 0.0))


def car_state(liveness: Liveness, telemetry: VehicleTelemetry | None, previous: CarState) -> CarState:
    """The state of a car from its liveness and latest telemetry (None: a status, which says no more)."""
    if liveness is not Liveness.ONLINE:
        return CarState(liveness)
    if telemetry is None:
        return previous if previous not in (CarState.OFFLINE, CarState.ASLEEP) else CarState.ONLINE
    if telemetry.gear is not Gear.PARK or telemetry.vehicle_speed_kmh > 0:
        return CarState.DRIVING
    return CarState(telemetry.compute_state)


class FleetStore:
    """Cars, jobs, the dispatcher's summary and the link's health, fed one message at a time."""

    def __init__(self, topics: Topics, *, history_length: int = 120, car_history_length: int = 60,
                 car_history_limit: int = 5_000, sample_every_s: float = 1.0) -> None:
        self.topics = topics
        self.cars: dict[str, CarRow] = {}
        self.arrival: list[str] = []  # vehicle ids in order of first sight, append-only
        self.state_counts: Counter[str] = Counter()
        self.hardware_counts: Counter[str] = Counter()
        self.jobs = JobBook()
        self.earnings = EarningsBook()  # the ledger's money (report, and the car in view)
        self.summary: FleetSummary | None = None
        self.connections: dict[str, ConnectionStatus] = {}
        self.frames = GatewayFrames()
        self.link = LinkStatus()
        self.messages = 0
        self.rejected: Counter[str] = Counter()
        self.last_rejection = ""
        self.dropped = 0  # messages lost unread because the control room fell too far behind
        self.msgs_per_s = 0.0
        self.cars_version = 0  # bumped whenever any car row changes
        self.history = History(history_length)
        self.car_history: dict[str, deque[TelemetryPoint]] = {}
        self._car_history_length = car_history_length
        self._car_history_limit = car_history_limit
        self.sample_every_s = sample_every_s  # the history's time step, for the charts' axes
        self._rate_mark: tuple[float, int] | None = None
        self._last_sample: float | None = None

    # ingest ---------------------------------------------------------------------------------
    def ingest(self, topic: str, payload: bytes | bytearray) -> None:
        """Decode one MQTT message and apply it; a bad one is counted, logged and dropped."""
        self.messages += 1
        try:
            info, message = decode_on(self.topics, topic, payload)
        except ProtocolError as exc:
            self.reject(exc.reason, f"{exc.detail} (on {topic})")
            return
        self.apply(info, message)

    def reject(self, reason: str, detail: str, count: int = 1) -> None:
        """Count one rejected message (or `count` cars refused in one frame), logged once."""
        self.rejected[reason] += count
        self.last_rejection = f"{reason}: {detail}"[:200]
        log.warning("rejected message: %s", self.last_rejection)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def dispatcher_online(self) -> bool:
        """Whether a dispatcher's retained status (its Last Will included) says it is online."""
        return dispatcher_online(self.connections.values())

    def apply(self, info: TopicInfo, message: AnyMessage) -> None:
        """Apply one decoded message that `decode_on` has checked against its topic."""
        if isinstance(message, VehicleTelemetry):
            self._telemetry(message)
        elif isinstance(message, VehicleStatus):
            self._status(message)
        elif isinstance(message, ComputeOffer | OfferWithdrawal):
            self.apply_offer(message)
        elif isinstance(message, CarRoster):
            self.frames.roster(self, message)
        elif isinstance(message, OfferFrame):
            self.frames.offers(self, message)
        elif isinstance(message, FleetSummary):
            self.summary = message
        elif isinstance(message, ConnectionStatus):
            self.connections[message.sender] = message
            self.frames.connection(self, message)
        elif isinstance(message, JobState | JobSubmission):
            self.jobs.apply(message)
        elif isinstance(message, ShardAssignment | ShardCancel):
            self._command(message)
        elif isinstance(message, ShardProgress | ShardResult | ShardPreempted | ShardRefused):
            assert info.vehicle_id is not None
            self._shard_report(info.vehicle_id, message)
        elif isinstance(message, EarningsReport | CarEarnings):
            for car in self.earnings.apply(message):  # the EARNED column is the ledger's gross
                if (row := self.cars.get(car.vehicle_id)) is not None:
                    row.earned = car.money.gross
            self.cars_version += 1

    # cars -----------------------------------------------------------------------------------
    def car(self, vehicle_id: str) -> CarRow:
        """The row of `vehicle_id`, created (and counted) on first sight."""
        row = self.cars.get(vehicle_id)
        if row is None:
            row = CarRow(vehicle_id)
            self.cars[vehicle_id] = row
            self.arrival.append(vehicle_id)
            self.state_counts[row.code] += 1
        return row

    def _set_state(self, row: CarRow, state: CarState) -> None:
        if state is not row.state:
            self.state_counts[row.code] -= 1
            self.state_counts[state.code] += 1
            row.state = state

    def _set_hardware(self, row: CarRow, hardware: str) -> None:
        if hardware and hardware != row.hardware:
            if row.hardware:
                self.hardware_counts[row.hardware] -= 1
            self.hardware_counts[hardware] += 1
            row.hardware = hardware

    def _status(self, message: VehicleStatus) -> None:
        hardware = message.hardware.value if message.hardware is not None else None
        self.set_status(self.car(message.sender), message.state, hardware, message.reason, message.gateway)

    def set_status(self, row: CarRow, state: Liveness, hardware: str | None, reason: str, gateway: str | None) -> None:
        """Apply what a car's status says (its own message, or its entry in a gateway's roster)."""
        row.liveness = state
        if hardware is not None:
            self._set_hardware(row, hardware)
        row.gateway = gateway or row.gateway
        if state is not Liveness.ONLINE:
            row.offered_tops = 0.0
            row.reason = reason or state.value
        self._set_state(row, car_state(state, None, row.state))
        self.cars_version += 1

    def _telemetry(self, message: VehicleTelemetry) -> None:
        row = self.car(message.sender)
        self._set_hardware(row, message.hardware.value)
        row.liveness = Liveness.ONLINE
        row.soc = message.soc
        row.rated_tops = message.rated_tops
        row.tops_in_use = message.tops_in_use
        row.shard = message.shard or ""
        row.telemetry_live = True
        row.reason = message.suspend_reason.value if message.suspend_reason is not None else ""
        self._set_state(row, car_state(Liveness.ONLINE, message, row.state))
        if row.state is CarState.DRIVING and not row.reason:
            row.reason = "driving"
        self._record(message, row)
        self.cars_version += 1

    def _record(self, message: VehicleTelemetry, row: CarRow) -> None:
        points = self.car_history.get(row.vehicle_id)
        if points is None:
            if len(self.car_history) >= self._car_history_limit:
                return
            points = self.car_history[row.vehicle_id] = deque(maxlen=self._car_history_length)
        points.append(TelemetryPoint(message.sim_time, message.soc, message.tops_in_use, message.earned,
                                     message.pack_temp_c, row.state))

    def telemetry_unwatched(self, vehicle_ids: Iterable[str]) -> None:
        """These cars' telemetry is no longer subscribed: their telemetry figures are last known, not live."""
        for vid in vehicle_ids:
            if (row := self.cars.get(vid)) is not None:
                row.telemetry_live = False
        self.cars_version += 1

    def watch(self, vehicle_id: str) -> None:
        """Keep a telemetry history for this car even past the history limit (drill-down)."""
        self.car_history.setdefault(vehicle_id, deque(maxlen=self._car_history_length))

    def apply_offer(self, message: ComputeOffer | OfferWithdrawal) -> None:
        """Apply a car's offer or withdrawal (its own message, or an item of a gateway's offer frame)."""
        row = self.car(message.sender)
        if isinstance(message, ComputeOffer):
            self._set_hardware(row, message.hardware.value)
            row.offer_id = message.offer_id
            row.offered_tops = message.free_tops
            row.price_per_tops_hour = message.price_per_tops_hour
            row.expected_departure = message.expected_departure
            row.departure_confidence = message.departure_confidence
            row.soc = message.soc
            row.last_event = f"offered {message.free_tops:,.0f} TOPS"
        elif message.offer_id == row.offer_id or not row.offer_id:
            row.offered_tops = 0.0
            row.last_event = f"withdrew its offer: {message.reason}"
        self.cars_version += 1

    def _command(self, message: ShardAssignment | ShardCancel) -> None:
        row = self.car(message.vehicle_id)
        if isinstance(message, ShardAssignment):
            row.shard, row.job_id = message.assignment_id, message.job_id
            row.work_tera_ops = message.work_tera_ops
            row.done_tera_ops = row.checkpoint_tera_ops = message.resume_from_tera_ops
            row.last_event = f"assigned {message.shard_id} of {message.job_id}"
            if message.car_reliability is not None:
                row.reliability = message.car_reliability
        else:
            row.last_event = f"assignment {message.assignment_id} cancelled: {message.reason}"
        self.jobs.command(message)
        self.cars_version += 1

    def _shard_report(self, vehicle_id: str, message: ShardProgress | ShardResult | ShardPreempted
                      | ShardRefused) -> None:
        row = self.car(vehicle_id)
        if isinstance(message, ShardProgress):
            row.done_tera_ops = message.done_tera_ops
            row.checkpoint_tera_ops = message.checkpoint_tera_ops
        elif isinstance(message, ShardResult):
            # the result is the last word on the shard: nothing of it is left to lose
            row.done_tera_ops = row.checkpoint_tera_ops = row.work_tera_ops or message.work_tera_ops
            row.last_event = f"finished {message.shard_id}"
        elif isinstance(message, ShardPreempted):
            row.checkpoint_tera_ops = message.checkpoint_tera_ops
            row.last_event = f"preempted on {message.shard_id}: {message.reason}"
        else:
            row.last_event = f"refused {message.assignment_id}: {message.reason}"
        self.jobs.shard_report(vehicle_id, message)
        self.cars_version += 1

    # link and time --------------------------------------------------------------------------
    def link_changed(self, state: str, reason: str = "", attempt: int = 0) -> None:
        """Record the MQTT worker's connection state (connecting, connected, reconnecting, closed)."""
        if state == "connected" and self.link.state == "reconnecting":
            self.link.reconnects += 1
        self.link.state, self.link.reason, self.link.attempt = state, reason, attempt

    def tick(self, now: float) -> None:
        """Update the message rate and, once per `sample_every_s`, the history buffers."""
        if self._rate_mark is None:
            self._rate_mark = (now, self.messages)
        elif now - self._rate_mark[0] >= self.sample_every_s:
            then, count = self._rate_mark
            self.msgs_per_s = (self.messages - count) / (now - then)
            self._rate_mark = (now, self.messages)
        if self._last_sample is None or now - self._last_sample >= self.sample_every_s:
            self._last_sample = now
            self.history.append(self.history_values())

    def history_values(self) -> dict[str, float]:
        """The figures one history sample records; the dispatcher's summary where it has one."""
        s = self.summary
        return {
            "cars": float(s.cars_known if s else len(self.cars)),
            "tops_offered": s.tops_offered if s else 0.0,
            "tops_allocated": s.tops_allocated if s else 0.0,
            "earnings": s.earnings_gross + s.robotaxi_gross if s else 0.0,  # the ledger's gross: compute + robotaxi
            "earnings_net": s.earnings_net if s else 0.0,
            "msgs_per_s": self.msgs_per_s,
            "jobs_queued": float(s.jobs_by_status.get("queued", 0)) if s else float(self.jobs.count("queued")),
            "jobs_running": float(s.jobs_by_status.get("running", 0)) if s else float(self.jobs.count("running")),
            "utilisation_pct": 100.0 * utilisation(s) if s else 0.0,
        }
