"""The topic map: the only place topic strings are built and parsed.

Layout under a versioned root (default ``fleetroom/v1``)::

    {root}/vehicles/{vehicle}/status      retained VehicleStatus, the car's Last Will
    {root}/vehicles/{vehicle}/telemetry   VehicleTelemetry, QoS 0
    {root}/vehicles/{vehicle}/offer       ComputeOffer | OfferWithdrawal, QoS 1
    {root}/vehicles/{vehicle}/shards      ShardProgress | ShardResult | ShardPreempted | ShardRefused
    {root}/vehicles/{vehicle}/trips       RobotaxiTrip, QoS 1
    {root}/commands/{vehicle}             ShardAssignment | ShardCancel, written by the dispatcher
    {root}/connections/{client}/status    retained ConnectionStatus, a process's Last Will
    {root}/jobs/submit                    JobSubmission
    {root}/jobs/{job}/state               retained JobState
    {root}/dispatcher/summary             retained FleetSummary, once a second
    {root}/dispatcher/earnings            retained EarningsReport, every few seconds
    {root}/dispatcher/earnings/cars/{vehicle}  retained CarEarnings of one car
    {root}/control/dispatcher             SetPolicy | CancelJob
    {root}/control/fleet                  DriveAway | AddCars | SetOwnerMode
    {root}/gateways/{gw}/roster/{block}   retained CarRoster: the statuses of one block of a gateway's cars
    {root}/gateways/{gw}/offers           OfferFrame: offers and withdrawals of many of a gateway's cars

A car writes only below ``{root}/vehicles/{its id}/`` and reads only ``{root}/commands/{its id}``,
which is what the broker ACL enforces. Per-car earnings sit four levels deep, so that the control
room's `control_room` filters (every topic up to three levels) leave them out but for the car in view.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

VERSION = "v1"
DEFAULT_PREFIX = "fleetroom"

_LEVEL = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class TopicError(ValueError):
    """A topic or topic level that is not part of the map."""


class Channel(StrEnum):
    """Every kind of topic in the map."""

    VEHICLE_STATUS = "vehicle_status"
    TELEMETRY = "telemetry"
    OFFER = "offer"
    SHARDS = "shards"
    COMMANDS = "commands"
    CONNECTION_STATUS = "connection_status"
    JOB_SUBMIT = "job_submit"
    JOB_STATE = "job_state"
    SUMMARY = "summary"
    DISPATCHER_CONTROL = "dispatcher_control"
    FLEET_CONTROL = "fleet_control"
    TRIPS = "trips"
    EARNINGS = "earnings"
    CAR_EARNINGS = "car_earnings"
    ROSTER = "roster"
    OFFER_FRAME = "offer_frame"


_VEHICLE_LEAVES = {
    "status": Channel.VEHICLE_STATUS,
    "telemetry": Channel.TELEMETRY,
    "offer": Channel.OFFER,
    "shards": Channel.SHARDS,
    "trips": Channel.TRIPS,
}
VEHICLE_LEAF: dict[Channel, str] = {channel: leaf for leaf, channel in _VEHICLE_LEAVES.items()}
"""The last topic level of each channel a vehicle publishes on."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a channel's messages travel: their MQTT QoS, and whether the broker keeps the last one."""

    qos: int
    retain: bool


# The one table that publishers and the schema export read (tests hold docs/PROTOCOL.md to it).
# QoS 0 for what is periodic and superseded by the next message; QoS 1 for what must arrive.
DELIVERY: dict[Channel, Delivery] = {
    Channel.VEHICLE_STATUS: Delivery(qos=1, retain=True),
    Channel.TELEMETRY: Delivery(qos=0, retain=False),
    Channel.OFFER: Delivery(qos=1, retain=False),
    Channel.SHARDS: Delivery(qos=1, retain=False),
    Channel.COMMANDS: Delivery(qos=1, retain=False),
    Channel.CONNECTION_STATUS: Delivery(qos=1, retain=True),
    Channel.JOB_SUBMIT: Delivery(qos=1, retain=False),
    Channel.JOB_STATE: Delivery(qos=1, retain=True),
    Channel.SUMMARY: Delivery(qos=0, retain=True),  # once a second; the next one supersedes a lost one
    Channel.DISPATCHER_CONTROL: Delivery(qos=1, retain=False),
    Channel.FLEET_CONTROL: Delivery(qos=1, retain=False),
    Channel.TRIPS: Delivery(qos=1, retain=False),  # each trip is money: it must arrive
    Channel.EARNINGS: Delivery(qos=0, retain=True),  # every few seconds; the next one supersedes a lost one
    Channel.CAR_EARNINGS: Delivery(qos=1, retain=True),  # sent only when the car's figures change
    Channel.ROSTER: Delivery(qos=1, retain=True),  # a late subscriber learns every car from the rosters
    Channel.OFFER_FRAME: Delivery(qos=1, retain=False),
}


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A parsed topic: its channel and the id it names, if any."""

    channel: Channel
    vehicle_id: str | None = None
    job_id: str | None = None
    client_id: str | None = None  # a process's user name: connections, and the gateway of a frame
    block: int | None = None  # a roster's block


def check_level(value: str, what: str = "topic level") -> str:
    """Return `value` if it is a safe single topic level, else raise `TopicError`."""
    if not _LEVEL.match(value):
        raise TopicError(f"{what} {value!r} must match {_LEVEL.pattern}")
    return value


class Topics:
    """Builds and parses topics under one versioned root."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        levels = prefix.split("/")
        for level in levels:
            check_level(level, "topic prefix level")
        self.prefix = prefix
        self.root = f"{prefix}/{VERSION}"
        self._root_levels = len(levels) + 1

    def __repr__(self) -> str:
        return f"Topics({self.prefix!r})"

    # vehicle namespace -------------------------------------------------------------------
    def vehicle(self, vehicle_id: str, channel: Channel) -> str:
        """The topic on which vehicle `vehicle_id` publishes `channel`."""
        leaf = VEHICLE_LEAF.get(channel)
        if leaf is None:
            raise TopicError(f"{channel} is not a vehicle channel")
        return f"{self.root}/vehicles/{check_level(vehicle_id, 'vehicle id')}/{leaf}"

    def vehicle_status(self, vehicle_id: str) -> str:
        return self.vehicle(vehicle_id, Channel.VEHICLE_STATUS)

    def telemetry(self, vehicle_id: str) -> str:
        return self.vehicle(vehicle_id, Channel.TELEMETRY)

    def offer(self, vehicle_id: str) -> str:
        return self.vehicle(vehicle_id, Channel.OFFER)

    def shards(self, vehicle_id: str) -> str:
        return self.vehicle(vehicle_id, Channel.SHARDS)

    def trips(self, vehicle_id: str) -> str:
        return self.vehicle(vehicle_id, Channel.TRIPS)

    def vehicle_namespace(self, vehicle_id: str) -> str:
        """The filter covering everything vehicle `vehicle_id` may publish."""
        return f"{self.root}/vehicles/{check_level(vehicle_id, 'vehicle id')}/#"

    def commands(self, vehicle_id: str) -> str:
        """The topic on which the dispatcher sends commands to one vehicle."""
        return f"{self.root}/commands/{check_level(vehicle_id, 'vehicle id')}"

    # processes, jobs, dispatcher ------------------------------------------------------------
    def connection_status(self, client_id: str) -> str:
        return f"{self.root}/connections/{check_level(client_id, 'client id')}/status"

    @property
    def job_submit(self) -> str:
        return f"{self.root}/jobs/submit"

    def job_state(self, job_id: str) -> str:
        return f"{self.root}/jobs/{check_level(job_id, 'job id')}/state"

    @property
    def summary(self) -> str:
        return f"{self.root}/dispatcher/summary"

    @property
    def earnings(self) -> str:
        return f"{self.root}/dispatcher/earnings"

    def car_earnings(self, vehicle_id: str) -> str:
        """The retained ledger figures of one car."""
        return f"{self.root}/dispatcher/earnings/cars/{check_level(vehicle_id, 'vehicle id')}"

    @property
    def all_car_earnings(self) -> str:
        return f"{self.root}/dispatcher/earnings/cars/+"

    # gateway frames (protocol.frames) -------------------------------------------------------
    def roster(self, gateway: str, block: int) -> str:
        """The retained roster of one block of gateway `gateway`'s cars."""
        if block < 0:
            raise TopicError(f"roster block {block} must be >= 0")
        return f"{self.root}/gateways/{check_level(gateway, 'gateway')}/roster/{block}"

    def offer_frames(self, gateway: str) -> str:
        """The topic of gateway `gateway`'s offer frames."""
        return f"{self.root}/gateways/{check_level(gateway, 'gateway')}/offers"

    def gateway_namespace(self, gateway: str) -> str:
        """The filter covering every frame gateway `gateway` may publish."""
        return f"{self.root}/gateways/{check_level(gateway, 'gateway')}/#"

    @property
    def all_rosters(self) -> str:
        return f"{self.root}/gateways/+/roster/+"

    @property
    def all_offer_frames(self) -> str:
        return f"{self.root}/gateways/+/offers"

    @property
    def dispatcher_control(self) -> str:
        return f"{self.root}/control/dispatcher"

    @property
    def fleet_control(self) -> str:
        return f"{self.root}/control/fleet"

    # subscription filters ------------------------------------------------------------------
    @property
    def everything(self) -> str:
        return f"{self.root}/#"

    @property
    def control_room(self) -> tuple[str, ...]:
        """Every topic up to three levels below the root: all but the per-car earnings."""
        return (f"{self.root}/+", f"{self.root}/+/+", f"{self.root}/+/+/+")

    def all_vehicles(self, channel: Channel | None = None) -> str:
        """All vehicles' topics, or one channel of every vehicle."""
        if channel is None:
            return f"{self.root}/vehicles/+/+"
        leaf = VEHICLE_LEAF.get(channel)
        if leaf is None:
            raise TopicError(f"{channel} is not a vehicle channel")
        return f"{self.root}/vehicles/+/{leaf}"

    @property
    def all_commands(self) -> str:
        return f"{self.root}/commands/+"

    @property
    def all_connections(self) -> str:
        return f"{self.root}/connections/+/status"

    @property
    def all_job_states(self) -> str:
        return f"{self.root}/jobs/+/state"

    # parsing -------------------------------------------------------------------------------
    def parse(self, topic: str) -> TopicInfo:
        """Return what `topic` is, or raise `TopicError` if it is not in the map."""
        if not topic.startswith(self.root + "/"):
            raise TopicError(f"topic {topic!r} is not under {self.root!r}")
        levels = topic[len(self.root) + 1 :].split("/")
        match levels:
            case ["vehicles", vid, leaf] if leaf in _VEHICLE_LEAVES and _LEVEL.match(vid):
                return TopicInfo(_VEHICLE_LEAVES[leaf], vehicle_id=vid)
            case ["commands", vid] if _LEVEL.match(vid):
                return TopicInfo(Channel.COMMANDS, vehicle_id=vid)
            case ["connections", cid, "status"] if _LEVEL.match(cid):
                return TopicInfo(Channel.CONNECTION_STATUS, client_id=cid)
            case ["jobs", "submit"]:
                return TopicInfo(Channel.JOB_SUBMIT)
            case ["jobs", job, "state"] if _LEVEL.match(job):
                return TopicInfo(Channel.JOB_STATE, job_id=job)
            case ["dispatcher", "summary"]:
                return TopicInfo(Channel.SUMMARY)
            case ["dispatcher", "earnings"]:
                return TopicInfo(Channel.EARNINGS)
            case ["dispatcher", "earnings", "cars", vid] if _LEVEL.match(vid):
                return TopicInfo(Channel.CAR_EARNINGS, vehicle_id=vid)
            case ["control", "dispatcher"]:
                return TopicInfo(Channel.DISPATCHER_CONTROL)
            case ["control", "fleet"]:
                return TopicInfo(Channel.FLEET_CONTROL)
            case ["gateways", gw, "roster", block] if _LEVEL.match(gw) and block.isdigit() and len(block) <= 7:
                return TopicInfo(Channel.ROSTER, client_id=gw, block=int(block))
            case ["gateways", gw, "offers"] if _LEVEL.match(gw):
                return TopicInfo(Channel.OFFER_FRAME, client_id=gw)
        raise TopicError(f"topic {topic!r} is not in the topic map")
