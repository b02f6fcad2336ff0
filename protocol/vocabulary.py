"""Words every part uses alike: the state a car is counted under, and whether a dispatcher is online.

The dispatcher's registry, its `FleetSummary.cars_by_state` and the control room count cars by
`CarState`; the control room shows each state by its two-letter code, as `condor_status
-compact` does. A car's liveness and its compute state name a `CarState` of the same value, so
`CarState(status.state)` and `CarState(telemetry.compute_state)` are the way from one to the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final

from protocol.vehicle_messages import ConnectionStatus, Liveness


class CarState(StrEnum):
    """The one state a car is counted under, in the order a compact listing shows them."""

    IDLE = "idle"  # parked, eligible and offering
    BUSY = "busy"  # running a shard
    VACATING = "vacating"  # its owner returns: checkpointing before handing the shard back
    SUSPENDED = "suspended"  # parked but not eligible (its suspend reason says why)
    DRIVING = "driving"
    ONLINE = "online"  # heard from, nothing more known yet
    ASLEEP = "asleep"
    OFFLINE = "offline"

    @property
    def code(self) -> str:
        """The state's two-letter code, e.g. `Id` for idle."""
        return CAR_STATE_CODES[self]


CAR_STATE_CODES: Final[dict[CarState, str]] = {
    CarState.IDLE: "Id",
    CarState.BUSY: "Bu",
    CarState.VACATING: "Va",
    CarState.SUSPENDED: "Su",
    CarState.DRIVING: "Dr",
    CarState.ONLINE: "On",
    CarState.ASLEEP: "As",
    CarState.OFFLINE: "Of",
}
"""Each car state's two-letter code."""

CAR_STATE_BY_CODE: Final[dict[str, CarState]] = {code: state for state, code in CAR_STATE_CODES.items()}


def is_online_dispatcher(status: ConnectionStatus) -> bool:
    """Whether this process status is a dispatcher saying that it is online."""
    return status.role == "dispatcher" and status.state is Liveness.ONLINE


def dispatcher_online(statuses: Iterable[ConnectionStatus]) -> bool:
    """Whether a dispatcher is online, given the latest (retained) status of each process connection.

    A dispatcher's status is retained and its Last Will says `offline`, so the latest status per
    connection is the truth: one `online` dispatcher among them means job submissions and
    dispatcher commands reach someone.
    """
    return any(is_online_dispatcher(status) for status in statuses)
