"""What a fleet process receives, decoded: assignments, cancellations, drive-away, add-cars and process statuses.

The handler only decodes, with the codec every part uses (`protocol.decode_on`: the kind must
belong on the channel, a command must be addressed to the car whose topic carries it), and
hands each message to the fleet, which starts, refuses and cancels shards, or to the callbacks
its owner passed in. Bad input never stops a car: it is counted, logged (the first few of each
kind, then every thousandth), and, when it names an assignment, refused with a reason the
dispatcher can read.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import datetime

from fake_vehicles.car import Car
from fake_vehicles.catalogue import normalise_mix
from fake_vehicles.fleet import LOG_FIRST, Fleet
from protocol.base import HardwareGeneration
from protocol.codec import AnyMessage, ProtocolError, decode, decode_on
from protocol.fleet_messages import AddCars, DriveAway
from protocol.job_messages import ShardAssignment, ShardCancel
from protocol.owners import SetOwnerMode
from protocol.topics import Channel, TopicError
from protocol.vehicle_messages import ConnectionStatus, Liveness
from protocol.vocabulary import is_online_dispatcher

log = logging.getLogger(__name__)
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

DispatcherOnline = Callable[[datetime], None]
"""Called with the `sent_at` of each `online` status a dispatcher publishes."""
GatewayStatus = Callable[[ConnectionStatus, bool], None]
"""Called with each fleet process's status (this one's included), checked against its topic, and
whether the broker sent it as retained (on subscribing) rather than as it was published."""


class CommandHandler:
    """Decodes raw (topic, payload) pairs and hands them to one fleet or to its owner's callbacks."""

    def __init__(self, fleet: Fleet, *, on_dispatcher_online: DispatcherOnline,
                 on_gateway_status: GatewayStatus) -> None:
        self.fleet = fleet
        self.topics = fleet.encoder.topics
        self.on_dispatcher_online = on_dispatcher_online
        self.on_gateway_status = on_gateway_status

    def bad(self, reason: str, detail: str) -> None:
        """Count and log one rejected input."""
        counts = self.fleet.counts
        counts[f"rejected_{reason}"] += 1
        counts["rejected"] += 1
        n = counts[f"rejected_{reason}"]
        if n <= LOG_FIRST or n % 1000 == 0:
            log.warning("dropped bad input (%s, #%d): %s", reason, n, detail)

    def handle(self, topic: str, payload: bytes, t: float, *, retained: bool = False) -> None:
        """Act on one received message at simulation time `t`."""
        try:
            info = self.topics.parse(topic)
        except TopicError as exc:
            self.bad("unknown_topic", str(exc))
            return
        if info.channel is Channel.COMMANDS:
            car = self.fleet.by_id.get(info.vehicle_id or "")
            if car is None:
                self.fleet.counts["foreign_commands"] += 1  # another fleet process's car: not even decoded
                return
            self._command(car, topic, payload, t)
        elif info.channel is Channel.FLEET_CONTROL:
            self._control(topic, payload, t)
        elif info.channel is Channel.CONNECTION_STATUS:
            self._connection(topic, payload, retained)
        else:
            self.bad("wrong_channel", f"not subscribed to {topic}")

    def _decode(self, topic: str, payload: bytes, what: str) -> AnyMessage | None:
        """The message, checked against its topic; None (counted, logged) if it is rejected."""
        try:
            return decode_on(self.topics, topic, payload)[1]
        except ProtocolError as exc:
            self.bad(exc.reason, f"{what}: {exc.detail}")
            return None

    def _connection(self, topic: str, payload: bytes, retained: bool) -> None:
        """A process's status: a dispatcher (back) online, or another fleet process (see `rivals`)."""
        message = self._decode(topic, payload, f"status on {topic}")  # the sender is the topic's, ACL-guarded
        if not isinstance(message, ConnectionStatus):
            return
        if is_online_dispatcher(message):
            self.on_dispatcher_online(message.sent_at)
        elif message.role == "gateway":
            self.on_gateway_status(message, retained)

    def _command(self, car: Car, topic: str, payload: bytes, t: float) -> None:
        try:
            _, message = decode_on(self.topics, topic, payload)
        except ProtocolError as exc:
            self.bad(exc.reason, f"command for {car.vehicle_id}: {exc.detail}")
            if not car.silent:
                self._refuse_rejected(car, payload, exc)
            return
        if car.silent:
            self.fleet.counts["ignored_while_silent"] += 1
        elif isinstance(message, ShardAssignment):
            self.fleet.assign(car, message, t)
        elif isinstance(message, ShardCancel):
            self.fleet.cancel(car, message.assignment_id)

    def _refuse_rejected(self, car: Car, payload: bytes, exc: ProtocolError) -> None:
        """Refuse a rejected command that names an assignment, so the dispatcher need not wait for it."""
        if exc.reason == "topic_mismatch":  # valid, but addressed to another car
            message = decode(payload)
            if isinstance(message, ShardAssignment):
                why = f"not addressed to this car (addressed to {message.vehicle_id})"
                self.fleet.refuse(car, message.assignment_id, why)
        elif exc.reason in ("invalid", "oversized"):
            assignment_id = _assignment_id_of(payload)
            if assignment_id is not None:
                self.fleet.refuse(car, assignment_id, f"malformed assignment: {exc.detail}")

    def _control(self, topic: str, payload: bytes, t: float) -> None:
        message = self._decode(topic, payload, "fleet control")
        if isinstance(message, DriveAway):
            car = self.fleet.by_id.get(message.vehicle_id)
            if car is not None:
                self.fleet.drive_away(car, t)
        elif isinstance(message, AddCars):
            self._add_cars(message)
        elif isinstance(message, SetOwnerMode):
            car = self.fleet.by_id.get(message.vehicle_id)
            if car is not None:
                self._set_owner_mode(car, message, t)

    def _set_owner_mode(self, car: Car, message: SetOwnerMode, t: float) -> None:
        """The owner changed how the car earns: stop what the new mode forbids, and say so in telemetry now."""
        fleet = self.fleet
        fleet.counts["owner_mode_changes"] += 1
        if not car.placed:
            fleet.place(car)
        if car.shard is None:
            car.advance(t)
        car.owner_mode = message.owner_mode
        reason = car.suspend_reason(t)
        if reason is not None and car.shard is not None:
            fleet.preempt(car, f"owner mode {message.owner_mode.value}: {reason.value}")
        if reason is not None:
            fleet.withdraw(car, f"suspended: {reason.value}")
        elif car.offer_id is None and car.shard is None and not car.silent:
            fleet.offer(car)
        if not car.silent:  # the status tells the dispatcher (which reads no telemetry), telemetry the control room
            fleet.send_status(car, Liveness.ONLINE, faults=False)  # in gateway mode: its roster
            fleet.send(car, Channel.TELEMETRY, fleet.encoder.telemetry(car, reason, car.compute_state(reason)))

    def _add_cars(self, message: AddCars) -> None:
        mix: dict[HardwareGeneration, float] | None = None
        if message.hardware_mix:
            try:
                mix = normalise_mix({HardwareGeneration(k.upper()): v for k, v in message.hardware_mix.items()})
            except ValueError as exc:
                self.bad("invalid", f"add_cars hardware_mix: {exc}")
                return
        self.fleet.add_cars(message.count, mix)


def _assignment_id_of(payload: bytes) -> str | None:
    """The assignment id of a payload that failed validation, if one can be read safely."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    value = data.get("assignment_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and _ID.match(value) else None
