"""Gateway frames: one MQTT message speaks for many cars of one fleet gateway.

A gateway process runs thousands of cars over one connection; sending each car's status and
offer as its own message makes a million cars two million messages, which no Python consumer
reads at the broker's pace. So a gateway (`--mode gateway`) batches them, the way Tesla's
fleet-telemetry batches records and a Sparkplug edge node speaks for its devices:

- `CarRoster` on ``{root}/gateways/{gw}/roster/{block}`` (retained, QoS 1): the whole current
  status of one block of the gateway's cars (car i in join order sits in block i // ROSTER_BLOCK).
  A roster supersedes the block's previous one; a receiver diffs the two. A car listed offline has
  left (its reason says why); a car missing from the new roster that was in the old one has left
  too. Retained, so a late subscriber learns every car's state from a few thousand messages.
- `OfferFrame` on ``{root}/gateways/{gw}/offers`` (QoS 1): offers and withdrawals in the order
  they happened, each the car's own full message (its `sender` is the car).

Per-car meaning is kept: the broker lets user `gw` write only below ``gateways/gw/``, and a
receiver accepts in gw's frames only the cars gw speaks for (see docs/PROTOCOL.md). Telemetry,
shard messages and trips stay on per-car topics in both modes.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeVar

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from protocol.base import (
    FRAME_MAX_BYTES,
    HardwareGeneration,
    Identifier,
    Message,
    ProtocolError,
    Text,
    WireModel,
)
from protocol.topics import Channel
from protocol.vehicle_messages import ComputeOffer, Liveness, OfferWithdrawal, OwnerMode

ROSTER_BLOCK: Final = 500
"""Cars per roster block: a roster of 500 cars is about 50 KB of JSON."""

OFFER_FRAME_MAX: Final = 400
"""Offers and withdrawals per offer frame: about 200 KB of JSON at most."""

FRAME_CHANNELS: Final = frozenset({Channel.ROSTER, Channel.OFFER_FRAME})


class RosterEntry(WireModel):
    """One car in a roster: what a `VehicleStatus` says, without the envelope the roster carries."""

    vehicle_id: Identifier
    state: Liveness
    hardware: HardwareGeneration | None = None
    reason: Text = ""
    owner_id: Identifier | None = None  # pseudonymous owner, for per-owner earnings; None = the car's own
    owner_mode: OwnerMode | None = None  # how the owner lets the car earn


class CarRoster(Message):
    """The current status of every car in one block of a gateway's cars (retained)."""

    kind: Literal["car_roster"] = "car_roster"
    block: int = Field(ge=0, le=1_000_000)
    cars: list[RosterEntry] = Field(default_factory=list, max_length=ROSTER_BLOCK)

    @model_validator(mode="after")
    def _each_car_once(self) -> CarRoster:
        if len({car.vehicle_id for car in self.cars}) != len(self.cars):
            raise ValueError("a car is listed twice in one roster")
        return self


OfferItem = Annotated[ComputeOffer | OfferWithdrawal, Field(discriminator="kind")]


class OfferFrame(Message):
    """Offers and withdrawals of many cars of one gateway, in the order they happened."""

    kind: Literal["offer_frame"] = "offer_frame"
    seq: int = Field(ge=0)  # increases by one per frame of a gateway process: a gap is a lost frame
    offers: list[OfferItem] = Field(default_factory=list, max_length=OFFER_FRAME_MAX)


Frame = CarRoster | OfferFrame
F = TypeVar("F", CarRoster, OfferFrame)

_ADAPTERS: Final[dict[Channel, TypeAdapter[CarRoster] | TypeAdapter[OfferFrame]]] = {
    Channel.ROSTER: TypeAdapter(CarRoster),
    Channel.OFFER_FRAME: TypeAdapter(OfferFrame),
}


def validation_problem(exc: ValidationError) -> ProtocolError:
    """The `invalid` ProtocolError naming where a payload first failed validation."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "payload"
    return ProtocolError("invalid", f"{where}: {first['msg']}")


def decode_frame(channel: Channel, payload: bytes | bytearray) -> Frame:
    """Parse and validate a frame of `channel` (ROSTER or OFFER_FRAME), or raise `ProtocolError`.

    Faster than the codec's union for the same payload: the frame's type is known from its topic.
    """
    adapter = _ADAPTERS.get(channel)
    if adapter is None:
        raise ProtocolError("wrong_channel", f"{channel} carries no gateway frames")
    if len(payload) > FRAME_MAX_BYTES:
        raise ProtocolError("oversized", f"{len(payload)} bytes > {FRAME_MAX_BYTES}")
    try:
        return adapter.validate_json(payload)
    except ValidationError as exc:
        raise validation_problem(exc) from None


def roster_blocks(count: int) -> int:
    """How many roster blocks `count` cars fill."""
    return -(-count // ROSTER_BLOCK)
