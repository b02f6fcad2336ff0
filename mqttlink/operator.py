"""The operator link: the one place operator commands are built, routed and published.

Submit a job, cancel a job, set the matchmaking policy, drive a car away, add cars, set a car's
owner mode: the control
room, `fleetroom submit` and the demo's driver all send them through an `OperatorLink`, which
picks each command's topic from the topic map and its QoS and retain flag from
`protocol.topics.DELIVERY`, and refuses a command meant for the dispatcher while none is online
(such commands are not retained: sent then, they would reach nobody). No Textual here.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TypedDict

import aiomqtt

from protocol import AddCars, CancelJob, DriveAway, JobSubmission, MatchPolicy, SetPolicy, Topics, encode, utc_now
from protocol.base import Message
from protocol.codec import CHANNEL_KINDS
from protocol.owners import SetOwnerMode
from protocol.topics import DELIVERY, Channel
from protocol.vehicle_messages import OwnerMode

log = logging.getLogger(__name__)

OperatorCommand = JobSubmission | CancelJob | SetPolicy | DriveAway | AddCars | SetOwnerMode
Publish = Callable[[str, bytes, int, bool], Awaitable[None]]
"""Publish `payload` on `topic` with `qos` and `retain`, as `aiomqtt.Client.publish` does."""

OPERATOR_CHANNELS = (Channel.JOB_SUBMIT, Channel.DISPATCHER_CONTROL, Channel.FLEET_CONTROL)
FOR_DISPATCHER = frozenset({Channel.JOB_SUBMIT, Channel.DISPATCHER_CONTROL})  # read only by a dispatcher
CHANNEL_OF: Mapping[type[Message], Channel] = {
    kind: channel for channel in OPERATOR_CHANNELS for kind in CHANNEL_KINDS[channel]
}
"""The channel each operator command travels on, from the codec's table of who may appear where."""


class Envelope(TypedDict):
    """The fields every operator command carries."""

    sender: str
    sent_at: datetime
    sim_time: datetime


class NoDispatcher(Exception):
    """A command for the dispatcher was not sent: no dispatcher is online to receive it."""

    def __init__(self, command: OperatorCommand) -> None:
        super().__init__(f"no dispatcher is online: {command.kind} not sent (it would reach nobody)")
        self.command = command


def new_job_id() -> str:
    """A fresh job id; the submitter picks it so that it can watch the job's state first."""
    return f"job-{secrets.token_hex(4)}"


def _publisher_of(client: aiomqtt.Client) -> Publish:
    async def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
        await client.publish(topic, payload, qos=qos, retain=retain)

    return publish


class OperatorLink:
    """Builds operator commands and publishes each on its topic with its channel's delivery."""

    def __init__(self, publish: aiomqtt.Client | Publish, topics: Topics, *, sender: str,
                 dispatcher_online: Callable[[], bool] | None,
                 sim_time: Callable[[], datetime] = utc_now) -> None:
        """`dispatcher_online` is the sender's view of the dispatchers' retained statuses; None
        only for a sender that resends until the dispatcher answers, so that a lost command is harmless."""
        self._publish = _publisher_of(publish) if isinstance(publish, aiomqtt.Client) else publish
        self.topics = topics
        self.sender = sender
        self.dispatcher_online = dispatcher_online
        self.sim_time = sim_time
        self.topic_of = {Channel.JOB_SUBMIT: topics.job_submit, Channel.DISPATCHER_CONTROL: topics.dispatcher_control,
                         Channel.FLEET_CONTROL: topics.fleet_control}

    def envelope(self) -> Envelope:
        """Sender and times for a command sent now."""
        return {"sender": self.sender, "sent_at": utc_now(), "sim_time": self.sim_time()}

    async def send(self, command: OperatorCommand) -> None:
        """Publish `command`; raise `NoDispatcher` for one the dispatcher reads when none is online."""
        channel = CHANNEL_OF[type(command)]
        if channel in FOR_DISPATCHER and self.dispatcher_online is not None and not self.dispatcher_online():
            raise NoDispatcher(command)
        delivery = DELIVERY[channel]
        topic = self.topic_of[channel]
        await self._publish(topic, encode(command), delivery.qos, delivery.retain)
        log.info("published %s on %s", command.kind, topic)

    async def submit(self, job: JobSubmission) -> JobSubmission:
        """Submit a job (resending one is harmless: its id decides)."""
        await self.send(job)
        return job

    async def cancel_job(self, job_id: str, reason: str = "") -> CancelJob:
        """Ask the dispatcher to cancel a job."""
        command = CancelJob(**self.envelope(), job_id=job_id, reason=reason)
        await self.send(command)
        return command

    async def set_policy(self, policy: MatchPolicy) -> SetPolicy:
        """Ask the dispatcher to rank offers by `policy`."""
        command = SetPolicy(**self.envelope(), policy=policy)
        await self.send(command)
        return command

    async def drive_away(self, vehicle_id: str) -> DriveAway:
        """Tell the fleet that this car's owner returns now."""
        command = DriveAway(**self.envelope(), vehicle_id=vehicle_id)
        await self.send(command)
        return command

    async def add_cars(self, count: int, hardware_mix: Mapping[str, float] | None = None) -> AddCars:
        """Ask a fleet process that accepts it to add `count` cars of this hardware mix."""
        command = AddCars(**self.envelope(), count=count, hardware_mix=dict(hardware_mix or {}))
        await self.send(command)
        return command

    async def set_owner_mode(self, vehicle_id: str, owner_mode: OwnerMode) -> SetOwnerMode:
        """Tell the fleet that this car's owner now lets it earn by `owner_mode`."""
        command = SetOwnerMode(**self.envelope(), vehicle_id=vehicle_id, owner_mode=owner_mode)
        await self.send(command)
        return command
