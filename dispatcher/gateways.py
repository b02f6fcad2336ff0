"""Which gateway speaks for which car: rosters bind cars, and each block's last roster is kept for the diff.

A gateway (`protocol.frames`) sends the whole status of each block of its cars as a retained
roster. The broker lets gateway `gw` write only its own frames; this keeps per-car meaning
inside them: a car is bound to the first gateway whose roster lists it, and stays bound while
a roster of that gateway lists it. Another gateway may list or offer for it only once its
gateway is known to be offline (`car_of_another_gateway` otherwise), and a gateway may offer
only for cars its rosters list (`offer_for_unlisted_car`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.frames import RosterEntry

ANOTHER_GATEWAY = "car_of_another_gateway"
UNLISTED = "offer_for_unlisted_car"


@dataclass(slots=True)
class RosterDiff:
    """What a new roster changes: entries to apply, cars no longer listed, cars refused."""

    changed: list[RosterEntry] = field(default_factory=list)  # new or different from the block's last roster
    unchanged_online: list[str] = field(default_factory=list)  # listed online as before: alive, nothing new
    gone: list[str] = field(default_factory=list)  # in the block's last roster, not in this one
    refused: list[str] = field(default_factory=list)  # bound to another gateway that is online


class Gateways:
    """Car-to-gateway bindings, each roster block's last entries, and the gateways known to be offline."""

    def __init__(self) -> None:
        self.bound: dict[str, tuple[str, int]] = {}  # vehicle -> (gateway, block) whose roster lists it
        # (gateway, block) -> vehicle -> what its last roster said of it, as a small tuple (a million are kept)
        self.blocks: dict[tuple[str, int], dict[str, tuple[object, ...]]] = {}
        self.offline: set[str] = set()  # gateways whose connection status said offline

    def connection(self, gateway: str, online: bool) -> None:
        """A gateway's connection status: while offline, other gateways may take its cars."""
        if online:
            self.offline.discard(gateway)
        else:
            self.offline.add(gateway)

    def gateway_of(self, vehicle_id: str) -> str | None:
        """The gateway whose roster lists the car, if any."""
        holder = self.bound.get(vehicle_id)
        return None if holder is None else holder[0]

    def offer_refusal(self, gateway: str, vehicle_id: str) -> str | None:
        """Why `gateway` may not offer for the car, or None if its rosters list it."""
        holder = self.gateway_of(vehicle_id)
        if holder == gateway:
            return None
        return ANOTHER_GATEWAY if holder is not None and holder not in self.offline else UNLISTED

    def roster(self, gateway: str, block: int, entries: list[RosterEntry]) -> RosterDiff:
        """Take a block's new roster: bind its cars, and say what changed since the block's last one."""
        diff = RosterDiff()
        bound, here = self.bound, (gateway, block)  # one tuple shared by the block's cars
        previous = self.blocks.get(here, {})
        current: dict[str, tuple[object, ...]] = {}
        for entry in entries:
            vid = entry.vehicle_id
            said = (entry.state, entry.hardware, entry.owner_id, entry.owner_mode, entry.reason)
            holder = bound.get(vid)
            if holder != here:
                if holder is not None and holder[0] != gateway and holder[0] not in self.offline:
                    diff.refused.append(vid)
                    continue
                bound[vid] = here  # new, moved from an offline gateway, or from another block of this one
            current[vid] = said
            if holder == here and previous.get(vid) == said:
                if entry.state == "online":
                    diff.unchanged_online.append(vid)
            else:
                diff.changed.append(entry)
        for vid in previous:
            if vid not in current and bound.get(vid) == here:
                del bound[vid]
                diff.gone.append(vid)
        self.blocks[here] = current
        return diff
