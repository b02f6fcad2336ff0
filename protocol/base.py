"""The strict, frozen base of every wire message and the shared field types."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1
"""The wire schema version every message carries; a receiver rejects any other."""

MAX_PAYLOAD_BYTES = 64 * 1024
"""The largest payload the codec accepts; bigger ones are rejected before parsing."""

FRAME_MAX_BYTES = 240 * 1024
"""The largest gateway frame (`protocol.frames`): under the brokers' 256 KiB packet cap."""

WIRE_CONTRACT_VERSION = "1.1.0"
"""The wire contract's version (AsyncAPI `info.version`): 1.1 added gateway frames, which receivers
of 1.0 do not subscribe to; every 1.0 message is unchanged. Per-message `schema_version` stays 1."""

Identifier = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", strict=True)
]
"""A lowercase id that is safe as one MQTT topic level (no `/`, `+`, `#`)."""

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Text = Annotated[str, StringConstraints(max_length=500)]

# Upper bounds far above any real car or job, so that sums over a million cars stay finite
# (a huge but finite value would otherwise overflow an aggregate to infinity).
MAX_CAR_TOPS = 1e6
MAX_TERA_OPS = 1e18
MAX_KWH = 1e4
MAX_PRICE = 1e6
CarTops = Annotated[float, Field(gt=0.0, le=MAX_CAR_TOPS, allow_inf_nan=False)]
CarTopsOrZero = Annotated[float, Field(ge=0.0, le=MAX_CAR_TOPS, allow_inf_nan=False)]
TeraOps = Annotated[float, Field(gt=0.0, le=MAX_TERA_OPS, allow_inf_nan=False)]
TeraOpsOrZero = Annotated[float, Field(ge=0.0, le=MAX_TERA_OPS, allow_inf_nan=False)]
Kwh = Annotated[float, Field(ge=0.0, le=MAX_KWH, allow_inf_nan=False)]
Kw = Kwh  # a power in kW, bounded like an energy in kWh
Price = Annotated[float, Field(ge=0.0, le=MAX_PRICE, allow_inf_nan=False)]


class ProtocolError(ValueError):
    """A message that is rejected; `reason` is a short code for counting."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class WireModel(BaseModel):
    """A frozen, strict model that forbids unknown fields."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", use_enum_values=False)


class Message(WireModel):
    """The envelope every message carries: schema version, sender, wall-clock and simulation time."""

    schema_version: int = Field(default=SCHEMA_VERSION, ge=SCHEMA_VERSION, le=SCHEMA_VERSION)
    sender: Identifier
    sent_at: AwareDatetime
    sim_time: AwareDatetime


class HardwareGeneration(StrEnum):
    """The self-driving computer generation fitted to a car."""

    HW3 = "HW3"
    HW4 = "HW4"
    HW5 = "HW5"
    HW6 = "HW6"


def utc_now() -> datetime:
    """Return the wall-clock time, used only for `sent_at` and latency."""
    from datetime import UTC

    return datetime.now(UTC)
