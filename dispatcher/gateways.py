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
        self.bound: dict[str, str] = {}  # vehicle -> the gateway whose roster lists it
        self.blocks: dict[tuple[str, int], dict[str, RosterEntry]] = {}  # (gateway, block) -> vehicle -> entry
        self.offline: set[str] = set()  # gateways whose connection status said offline

    def connection(self, gateway: str, online: bool) -> None:
        """A gateway's connection status: while offline, other gateways may take its cars."""
        if online:
            self.offline.discard(gateway)
        else:
            self.offline.add(gateway)

    def owner_elsewhere(self, gateway: str, vehicle_id: str) -> bool:
        """Whether the car is bound to another gateway that is not known to be offline."""
        holder = self.bound.get(vehicle_id)
        return holder is not None and holder != gateway and holder not in self.offline

    def offer_refusal(self, gateway: str, vehicle_id: str) -> str | None:
        """Why `gateway` may not offer for the car, or None if its rosters list it."""
        holder = self.bound.get(vehicle_id)
        if holder == gateway:
            return None
        return ANOTHER_GATEWAY if holder is not None and holder not in self.offline else UNLISTED

    def roster(self, gateway: str, block: int, entries: list[RosterEntry]) -> RosterDiff:
        """Take a block's new roster: bind its cars, and say what changed since the block's last one."""
        diff = RosterDiff()
        bound = self.bound
        previous = self.blocks.get((gateway, block), {})
        current: dict[str, RosterEntry] = {}
        for entry in entries:
            vid = entry.vehicle_id
            holder = bound.get(vid)
            if holder != gateway:
                if holder is not None and holder not in self.offline:
                    diff.refused.append(vid)
                    continue
                bound[vid] = gateway
            current[vid] = entry
            old = previous.get(vid)
            if holder == gateway and old is not None and old == entry:
                if entry.state == "online":
                    diff.unchanged_online.append(vid)
            else:
                diff.changed.append(entry)
        for vid in previous:
            if vid not in current and bound.get(vid) == gateway:
                del bound[vid]
                diff.gone.append(vid)
        self.blocks[(gateway, block)] = current
        return diff
