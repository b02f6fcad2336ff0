"""What a fleet process does with what it receives: assignments, cancellations, drive-away and add-cars.

Bad input never stops a car: it is counted, logged (the first few of each kind, then every
thousandth), and, when it names an assignment, refused with a reason the dispatcher can read.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from fake_vehicles.car import FAULT_VANISH, Car
from fake_vehicles.catalogue import normalise_mix
from fake_vehicles.work import CHECKPOINT_PREFIX, RunningShard
from protocol.base import HardwareGeneration
from protocol.codec import CHANNEL_KINDS, ProtocolError, check_on_topic, decode
from protocol.fleet_messages import AddCars, DriveAway
from protocol.job_messages import ShardAssignment, ShardCancel
from protocol.topics import Channel, TopicError, TopicInfo
from protocol.vehicle_messages import ConnectionStatus, Liveness

if TYPE_CHECKING:
    from fake_vehicles.fleet import Fleet

log = logging.getLogger(__name__)
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
LOG_FIRST = 20


class CommandHandler:
    """Turns raw (topic, payload) pairs into actions on one fleet's cars."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.on_dispatcher_online: Callable[[datetime], None] = lambda sent_at: None
        """Called with the `sent_at` of each `online` status the dispatcher publishes."""
        self.on_gateway_status: Callable[[ConnectionStatus, bool], None] = lambda status, retained: None
        """Called with each fleet process's status (this one's included), checked against its topic,
        and whether the broker sent it as retained (on subscribing) rather than as it was published."""

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
            info = self.fleet.enc.topics.parse(topic)
        except TopicError as exc:
            self.bad("unknown_topic", str(exc))
            return
        if info.channel is Channel.COMMANDS:
            car = self.fleet.by_id.get(info.vehicle_id or "")
            if car is None:
                self.fleet.counts["foreign_commands"] += 1  # another fleet process's car
                return
            self._command(car, payload, t)
        elif info.channel is Channel.FLEET_CONTROL:
            self._control(payload, t)
        elif info.channel is Channel.CONNECTION_STATUS:
            self._connection(info, topic, payload, retained)
        else:
            self.bad("wrong_channel", f"not subscribed to {topic}")

    def _connection(self, info: TopicInfo, topic: str, payload: bytes, retained: bool) -> None:
        """A process's status: a dispatcher (back) online, or another fleet process (see `rivals`)."""
        try:
            message = decode(payload)
            check_on_topic(info, message)  # the sender is the name on the topic, which the ACL guards
        except ProtocolError as exc:
            self.bad(exc.reason, f"status on {topic}: {exc.detail}")
            return
        if not isinstance(message, ConnectionStatus):
            self.bad("wrong_channel", f"{message.kind} on {topic}")
            return
        if message.role == "dispatcher" and message.state is Liveness.ONLINE:
            self.on_dispatcher_online(message.sent_at)
        elif message.role == "gateway":
            self.on_gateway_status(message, retained)

    def _command(self, car: Car, payload: bytes, t: float) -> None:
        try:
            message = decode(payload)
        except ProtocolError as exc:
            self.bad(exc.reason, f"command for {car.vehicle_id}: {exc.detail}")
            assignment_id = _assignment_id_of(payload)
            if assignment_id is not None and not car.silent:
                self.refuse(car, assignment_id, f"malformed assignment: {exc.detail}")
            return
        if type(message) not in CHANNEL_KINDS[Channel.COMMANDS]:
            self.bad("wrong_channel", f"{message.kind} on the commands topic of {car.vehicle_id}")
            return
        assert isinstance(message, ShardAssignment | ShardCancel)
        if car.silent:
            self.fleet.counts["ignored_while_silent"] += 1
            return
        if message.vehicle_id != car.vehicle_id:
            self.bad("topic_mismatch", f"command for {message.vehicle_id} on the topic of {car.vehicle_id}")
            if isinstance(message, ShardAssignment):
                why = f"not addressed to this car (addressed to {message.vehicle_id})"
                self.refuse(car, message.assignment_id, why)
            return
        if isinstance(message, ShardAssignment):
            self.assign(car, message, t)
        else:
            self.cancel(car, message)

    def refuse(self, car: Car, assignment_id: str, reason: str) -> None:
        self.fleet.counts["refused"] += 1
        n = self.fleet.counts["refused"]
        if n <= LOG_FIRST or n % 1000 == 0:
            log.info("%s refused %s: %s", car.vehicle_id, assignment_id, reason)
        self.fleet.send(car, "shards", self.fleet.enc.refused(car.vehicle_id, assignment_id, reason))

    def why_not(self, car: Car, a: ShardAssignment, t: float) -> str | None:
        """Why `car` must not run `a` now, or None if it may."""
        if car.shard is not None:
            return f"busy with assignment {car.shard.assignment.assignment_id}"
        reason = car.suspend_reason(t)
        if reason is not None:
            return f"not eligible: {reason.value}"
        if a.allocated_tops > car.hardware.tops * 1.000001:
            return f"allocated_tops {a.allocated_tops:g} exceeds the car's {car.hardware.tops:g} TOPS"
        if a.deadline is not None and a.deadline < self.fleet.enc.to_datetime(t):
            return "deadline already passed"
        if a.price_per_tops_hour < car.price * 0.999:
            return f"price {a.price_per_tops_hour:.3g} below the car's ask {car.price:.3g}"
        if a.checkpoint and not a.checkpoint.startswith(f"{CHECKPOINT_PREFIX}:{a.shard_id}:"):
            return f"unknown checkpoint for shard {a.shard_id}"
        return None

    def assign(self, car: Car, a: ShardAssignment, t: float) -> None:
        fleet = self.fleet
        if car.shard is not None and car.shard.assignment.assignment_id == a.assignment_id:
            fleet.counts["duplicate_assignments"] += 1  # QoS 1 redelivery
            return
        car.advance(t)
        reason = self.why_not(car, a, t)
        if reason is not None:
            self.refuse(car, a.assignment_id, reason)
            return
        vanish_at = None
        if car.fault == FAULT_VANISH:
            span = a.work_tera_ops - a.resume_from_tera_ops
            vanish_at = a.resume_from_tera_ops + span * fleet.fault_rng.uniform(0.3, 0.7)
        car.shard = RunningShard(a, min(a.allocated_tops, car.hardware.tops), t, vanish_at)
        fleet.busy[car.index] = car
        fleet.counts["accepted"] += 1
        fleet.withdraw(car, f"busy: running {a.assignment_id}")
        fleet.send(car, "shards", fleet.enc.progress(car))  # the acknowledgement: work starts here

    def cancel(self, car: Car, c: ShardCancel) -> None:
        shard = car.shard
        if shard is None or shard.assignment.assignment_id != c.assignment_id:
            # Usually a race (the shard just ended here, or the cancel was redelivered): harmless.
            self.fleet.counts["stale_cancels"] += 1
            log.debug("%s has no assignment %s to cancel", car.vehicle_id, c.assignment_id)
            return
        self.fleet.counts["cancelled"] += 1
        self.fleet.release(car)

    def _control(self, payload: bytes, t: float) -> None:
        try:
            message = decode(payload)
        except ProtocolError as exc:
            self.bad(exc.reason, f"fleet control: {exc.detail}")
            return
        if isinstance(message, DriveAway):
            car = self.fleet.by_id.get(message.vehicle_id)
            if car is not None:
                self.fleet.counts["drive_away"] += 1
                self.fleet.drive_away(car, t)
        elif isinstance(message, AddCars):
            self._add_cars(message)
        else:
            self.bad("wrong_channel", f"{message.kind} on the fleet control topic")

    def _add_cars(self, message: AddCars) -> None:
        mix: dict[HardwareGeneration, float] | None = None
        if message.hardware_mix:
            try:
                mix = normalise_mix({HardwareGeneration(k.upper()): v for k, v in message.hardware_mix.items()})
            except ValueError as exc:
                self.bad("invalid", f"add_cars hardware_mix: {exc}")
                return
        self.fleet.counts["added_cars"] += message.count
        self.fleet.grow_to(self.fleet.total + message.count, mix)


def _assignment_id_of(payload: bytes) -> str | None:
    """The assignment id of a payload that failed validation, if one can be read safely."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    value = data.get("assignment_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and _ID.match(value) else None
