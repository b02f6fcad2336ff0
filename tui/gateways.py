"""Gateway frames in the control room's store: rosters diffed per block, offer frames per car. Pure.

A roster is the whole current status of one block of a gateway's cars; what it says of each car
means what that car's own `VehicleStatus` would (with `gateway` = the roster's sender). A car
listed offline, or listed in the block's previous roster and absent now, has left. Per-car
meaning is checked as the dispatcher checks it (docs/PROTOCOL.md, "Per-car meaning in a frame"):
a car is bound to the first gateway whose roster lists it; another gateway listing it or offering
for it while that gateway is online is refused (`car_of_another_gateway`), and an offer for a car
in none of the sender's current rosters is refused (`offer_for_unlisted_car`).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from protocol import ConnectionStatus, Liveness
from protocol.frames import CarRoster, OfferFrame

if TYPE_CHECKING:
    from tui.store import CarRow, FleetStore

LEFT_ROSTER = "left its gateway's roster"


class GatewayFrames:
    """The previous roster of every (gateway, block), and the frames' per-car checks."""

    def __init__(self) -> None:
        self.blocks: dict[tuple[str, int], tuple[str, ...]] = {}  # the ids each block's last roster listed
        self.refused: Counter[str] = Counter()  # cars refused in frames, by reason (also in store.rejected)

    def gateway_online(self, store: FleetStore, gateway: str) -> bool:
        """Whether `gateway` may still hold its cars: online unless its retained status says otherwise."""
        status = store.connections.get(gateway)
        return status is None or status.state is Liveness.ONLINE

    def _claim(self, store: FleetStore, gateway: str, row: CarRow | None) -> str | None:
        """Why `gateway` may not speak for this car, or None if it may."""
        if row is None or not row.frame_gateway or row.frame_gateway == gateway:
            return None
        if self.gateway_online(store, row.frame_gateway):
            return "car_of_another_gateway"
        return None

    def roster(self, store: FleetStore, roster: CarRoster) -> None:
        """Apply one roster: each listed car's status, then the departure of cars no longer listed."""
        gateway, block, cars = roster.sender, roster.block, store.cars
        gone = "" if self.gateway_online(store, gateway) else f"gateway {gateway} offline"  # a stale retained roster
        listed: list[str] = []
        refused: list[str] = []
        for entry in roster.cars:
            row = cars.get(entry.vehicle_id)
            if self._claim(store, gateway, row) is not None:
                refused.append(entry.vehicle_id)
                continue
            state, reason = (Liveness.OFFLINE, gone) if gone else (entry.state, entry.reason)
            if row is None:
                row = store.car(entry.vehicle_id)
            elif (row.frame_block == block and row.frame_gateway == gateway and row.liveness is state
                  is Liveness.ONLINE and (entry.hardware is None or entry.hardware.value == row.hardware)):
                listed.append(row.vehicle_id)  # unchanged since the block's last roster: most cars, most times
                continue
            row.frame_gateway, row.frame_block = gateway, block
            hardware = entry.hardware.value if entry.hardware is not None else None
            store.set_status(row, state, hardware, reason, gateway)
            listed.append(row.vehicle_id)
        previous = self.blocks.get((gateway, block), ())
        if previous:
            still = set(listed)
            for vid in previous:
                row = cars.get(vid)
                if vid not in still and row is not None and row.frame_gateway == gateway and row.frame_block == block:
                    row.frame_block = -1
                    store.set_status(row, Liveness.OFFLINE, None, LEFT_ROSTER, gateway)
        self.blocks[(gateway, block)] = tuple(listed)
        self._refuse(store, "car_of_another_gateway", refused, f"roster {block} of {gateway}")
        store.cars_version += 1

    def offers(self, store: FleetStore, frame: OfferFrame) -> None:
        """Apply each offer or withdrawal of a frame in order, if the sender speaks for its car."""
        gateway, cars = frame.sender, store.cars
        refused: dict[str, list[str]] = {}
        for item in frame.offers:
            why = self.offer_refusal(store, gateway, cars.get(item.sender))
            if why is not None:
                refused.setdefault(why, []).append(item.sender)
            else:
                store.apply_offer(item)
        for why, vids in refused.items():
            self._refuse(store, why, vids, f"offer frame {frame.seq} of {gateway}")

    def offer_refusal(self, store: FleetStore, gateway: str, row: CarRow | None) -> str | None:
        """Why an offer from `gateway` for this car is refused, or None."""
        if row is not None and row.frame_gateway == gateway and row.frame_block >= 0:
            return None
        if row is not None and row.frame_gateway not in ("", gateway) and self.gateway_online(store, row.frame_gateway):
            return "car_of_another_gateway"
        return "offer_for_unlisted_car"

    def connection(self, store: FleetStore, status: ConnectionStatus) -> None:
        """A gateway that went offline takes its listed cars with it, as the dispatcher sees it."""
        if status.role != "gateway" or status.state is Liveness.ONLINE:
            return
        gateway, cars = status.sender, store.cars
        reason = f"gateway {gateway} {status.state.value}"
        for (gw, block), vids in self.blocks.items():
            if gw != gateway:
                continue
            for vid in vids:
                row = cars.get(vid)
                if row is not None and row.frame_gateway == gateway and row.frame_block == block:
                    store.set_status(row, Liveness.OFFLINE, None, reason, gateway)
        store.cars_version += 1

    def _refuse(self, store: FleetStore, reason: str, vids: list[str], where: str) -> None:
        """Count every refused car; log once per frame (a hostile frame must not flood the log)."""
        if vids:
            self.refused[reason] += len(vids)
            store.reject(reason, f"{len(vids)} car(s) in {where}, first {vids[0]}", count=len(vids))

