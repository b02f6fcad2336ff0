"""Bytes in, bytes out: the one discriminated union and the checks a receiver makes."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, TypeAdapter, ValidationError

from protocol.base import MAX_PAYLOAD_BYTES, Message
from protocol.base import ProtocolError as ProtocolError  # re-exported: receivers catch it from here
from protocol.fleet_messages import AddCars, CancelJob, DriveAway, FleetSummary, SetPolicy
from protocol.frames import FRAME_CHANNELS, CarRoster, OfferFrame, decode_frame, validation_problem
from protocol.job_messages import (
    JobState,
    JobSubmission,
    ShardAssignment,
    ShardCancel,
    ShardPreempted,
    ShardProgress,
    ShardRefused,
    ShardResult,
)
from protocol.owners import CarEarnings, EarningsReport, RobotaxiTrip, SetOwnerMode
from protocol.topics import Channel, TopicError, TopicInfo, Topics
from protocol.vehicle_messages import (
    ComputeOffer,
    ConnectionStatus,
    OfferWithdrawal,
    VehicleStatus,
    VehicleTelemetry,
)

AnyMessage = Annotated[
    VehicleStatus
    | ConnectionStatus
    | VehicleTelemetry
    | ComputeOffer
    | OfferWithdrawal
    | JobSubmission
    | ShardAssignment
    | ShardCancel
    | ShardProgress
    | ShardResult
    | ShardPreempted
    | ShardRefused
    | JobState
    | FleetSummary
    | SetPolicy
    | CancelJob
    | DriveAway
    | AddCars
    | RobotaxiTrip
    | SetOwnerMode
    | EarningsReport
    | CarEarnings
    | CarRoster
    | OfferFrame,
    Field(discriminator="kind"),
]

MESSAGE_ADAPTER: Final[TypeAdapter[AnyMessage]] = TypeAdapter(AnyMessage)

CHANNEL_KINDS: Final[dict[Channel, frozenset[type[Message]]]] = {
    Channel.VEHICLE_STATUS: frozenset({VehicleStatus}),
    Channel.TELEMETRY: frozenset({VehicleTelemetry}),
    Channel.OFFER: frozenset({ComputeOffer, OfferWithdrawal}),
    Channel.SHARDS: frozenset({ShardProgress, ShardResult, ShardPreempted, ShardRefused}),
    Channel.COMMANDS: frozenset({ShardAssignment, ShardCancel}),
    Channel.CONNECTION_STATUS: frozenset({ConnectionStatus}),
    Channel.JOB_SUBMIT: frozenset({JobSubmission}),
    Channel.JOB_STATE: frozenset({JobState}),
    Channel.SUMMARY: frozenset({FleetSummary}),
    Channel.DISPATCHER_CONTROL: frozenset({SetPolicy, CancelJob}),
    Channel.FLEET_CONTROL: frozenset({DriveAway, AddCars, SetOwnerMode}),
    Channel.TRIPS: frozenset({RobotaxiTrip}),
    Channel.EARNINGS: frozenset({EarningsReport}),
    Channel.CAR_EARNINGS: frozenset({CarEarnings}),
    Channel.ROSTER: frozenset({CarRoster}),
    Channel.OFFER_FRAME: frozenset({OfferFrame}),
}
"""Which message kinds may appear on which channel."""


def encode(message: AnyMessage) -> bytes:
    """Serialise a message to compact JSON bytes."""
    return message.__pydantic_serializer__.to_json(message)


def decode(payload: bytes | bytearray, max_bytes: int = MAX_PAYLOAD_BYTES) -> AnyMessage:
    """Parse and validate one payload of at most `max_bytes`, or raise `ProtocolError`."""
    if len(payload) > max_bytes:
        raise ProtocolError("oversized", f"{len(payload)} bytes > {max_bytes}")
    try:
        return MESSAGE_ADAPTER.validate_json(payload)
    except ValidationError as exc:
        raise validation_problem(exc) from None


def check_on_topic(info: TopicInfo, message: AnyMessage) -> None:
    """Raise `ProtocolError` unless `message` belongs on the topic described by `info`."""
    allowed = CHANNEL_KINDS[info.channel]
    if type(message) not in allowed:
        raise ProtocolError("wrong_channel", f"{message.kind} is not allowed on {info.channel}")
    if info.vehicle_id is None:
        if isinstance(message, JobState) and message.job_id != info.job_id:
            raise ProtocolError("topic_mismatch", f"job {message.job_id} on the topic of {info.job_id}")
        if isinstance(message, ConnectionStatus | CarRoster | OfferFrame) and message.sender != info.client_id:
            raise ProtocolError("sender_mismatch", f"{message.sender} on the topic of {info.client_id}")
        return
    if info.channel is Channel.CAR_EARNINGS:
        if not isinstance(message, CarEarnings) or message.car.vehicle_id != info.vehicle_id:
            raise ProtocolError("topic_mismatch", f"earnings of another car on the topic of {info.vehicle_id}")
    elif info.channel is Channel.COMMANDS:
        target = getattr(message, "vehicle_id", None)
        if target != info.vehicle_id:
            raise ProtocolError("topic_mismatch", f"command for {target} on the topic of {info.vehicle_id}")
    elif message.sender != info.vehicle_id:
        raise ProtocolError("sender_mismatch", f"{message.sender} on the topic of {info.vehicle_id}")


def decode_on(topics: Topics, topic: str, payload: bytes | bytearray) -> tuple[TopicInfo, AnyMessage]:
    """Parse a topic and its payload together, checking that they agree."""
    try:
        info = topics.parse(topic)
    except TopicError as exc:
        raise ProtocolError("unknown_topic", str(exc)) from None
    # a gateway frame by its own type, known from the topic: faster than the union, and a larger cap
    message = decode_frame(info.channel, payload) if info.channel in FRAME_CHANNELS else decode(payload)
    if isinstance(message, CarRoster) and message.block != info.block:
        raise ProtocolError("topic_mismatch", f"roster of block {message.block} on the topic of block {info.block}")
    check_on_topic(info, message)
    return info, message
