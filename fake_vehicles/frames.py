"""A gateway's frames: its cars' statuses as retained rosters of blocks, their offers as numbered offer frames.

In gateway mode a fleet process speaks for its cars the way a Sparkplug edge node speaks for
its devices: car i (in join order) sits in roster block i // ROSTER_BLOCK, and whenever a car's
status changes the whole roster of its block is published again (retained, superseding the
previous one). Offers and withdrawals are the cars' own full messages, packed in order into
offer frames of at most OFFER_FRAME_MAX items (and FRAME_MAX_BYTES). Both are formatted
directly as JSON from pre-encoded parts; a test checks that `protocol.frames.decode_frame`
decodes them to exactly the models the slow path builds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fake_vehicles.car import Car
from fake_vehicles.messages import Encoder, owner_of
from protocol.base import FRAME_MAX_BYTES, HardwareGeneration
from protocol.frames import OFFER_FRAME_MAX, ROSTER_BLOCK, CarRoster, OfferFrame, RosterEntry
from protocol.vehicle_messages import ComputeOffer, Liveness, OfferWithdrawal, OwnerMode

Frame = tuple[str, bytes]  # (topic, payload)
_STATE: dict[Liveness | None, str] = {state: f'"{state.value}"' for state in Liveness}  # JSON, formatted once
_HARDWARE = {generation: f'"{generation.value}"' for generation in HardwareGeneration}
_MODE = {mode: f'"{mode.value}"' for mode in OwnerMode}
_FRAME_HEADROOM = 512  # bytes an offer frame's envelope takes at most, besides its items


class GatewayFrames:
    """What a gateway still has to say in frames: rosters of the blocks that changed, offers in order."""

    def __init__(self, encoder: Encoder, gateway: str) -> None:
        self.encoder, self.gateway = encoder, gateway
        self.dirty: set[int] = set()  # blocks whose roster must be published again
        self.repeats: list[int] = []  # blocks to publish once more (an injected duplicate)
        self.offers: list[bytes] = []  # each a car's own ComputeOffer or OfferWithdrawal, in order
        self.offer_bytes = 0
        self.seq = 0  # of the last offer frame this process published
        self.status_changes: list[int] = []  # cars whose listed status changed, for fleet-telemetry's events
        self._reasons: dict[str, str] = {"": '""'}
        self.offers_topic = encoder.topics.offer_frames(gateway)

    # what the cars say -----------------------------------------------------------------------
    def status(self, car: Car, state: Liveness, reason: str) -> None:
        """The car's status is now `state` (`reason`): its block's roster is due."""
        car.status_state, car.status_reason = state, reason
        self.dirty.add(car.index // ROSTER_BLOCK)
        self.status_changes.append(car.index)

    def offer(self, payload: bytes) -> None:
        """A car's offer or withdrawal, already encoded, for the next offer frame."""
        self.offers.append(payload)
        self.offer_bytes += len(payload) + 1

    @property
    def offers_full(self) -> bool:
        """True once a whole offer frame is waiting."""
        return len(self.offers) >= OFFER_FRAME_MAX or self.offer_bytes >= FRAME_MAX_BYTES - _FRAME_HEADROOM

    # frames --------------------------------------------------------------------------------
    def rosters(self, cars: Sequence[Car]) -> list[Frame]:
        """The roster of every block that changed (and any repeat), in block order; forgets them."""
        blocks = sorted(self.dirty) + self.repeats
        self.dirty, self.repeats = set(), []
        return [(self.roster_topic(block), self.roster(block, cars)) for block in blocks]

    def offer_frames(self, final: bool) -> list[Frame]:
        """Whole offer frames from the waiting offers; with `final`, the rest too."""
        frames: list[Frame] = []
        offers = self.offers
        start = 0
        while start < len(offers):
            end, size = start, 0
            while end < len(offers) and end - start < OFFER_FRAME_MAX and (
                    end == start or size + len(offers[end]) + 1 <= FRAME_MAX_BYTES - _FRAME_HEADROOM):
                size += len(offers[end]) + 1
                end += 1
            if not final and end - start < OFFER_FRAME_MAX and size < FRAME_MAX_BYTES // 2:
                break  # not a whole frame yet: wait for more this tick
            frames.append((self.offers_topic, self.offer_frame(offers[start:end])))
            start = end
        self.offers = offers[start:]
        self.offer_bytes = sum(len(o) + 1 for o in self.offers)
        return frames

    def roster_topic(self, block: int) -> str:
        return self.encoder.topics.roster(self.gateway, block)

    # fast path: JSON from parts ------------------------------------------------------------
    def roster(self, block: int, cars: Sequence[Car]) -> bytes:
        """The roster of `block` as JSON bytes, equal after decoding to `roster_model`."""
        entries = ",".join(self._entry(car) for car in cars[block * ROSTER_BLOCK:(block + 1) * ROSTER_BLOCK]
                           if car.status_state is not None)
        return (f'{{"schema_version":1,"kind":"car_roster","sender":"{self.gateway}",{self.encoder.stamp_json},'
                f'"block":{block},"cars":[{entries}]}}').encode()

    def _entry(self, car: Car) -> str:
        reason = self._reasons.get(car.status_reason)
        if reason is None:
            reason = self._reasons[car.status_reason] = json.dumps(car.status_reason)
        owner = owner_of(car)
        return (f'{{"vehicle_id":"{car.vehicle_id}","state":{_STATE[car.status_state]},'
                f'"hardware":{_HARDWARE[car.hardware.generation]},"reason":{reason},'
                f'"owner_id":{"null" if owner is None else chr(34) + owner + chr(34)},'
                f'"owner_mode":{_MODE[car.owner_mode]}}}')

    def offer_frame(self, items: Sequence[bytes]) -> bytes:
        """One offer frame of these encoded offers and withdrawals, equal after decoding to `offer_frame_model`."""
        self.seq += 1
        head = (f'{{"schema_version":1,"kind":"offer_frame","sender":"{self.gateway}",{self.encoder.stamp_json},'
                f'"seq":{self.seq},"offers":[').encode()
        return head + b",".join(items) + b"]}"

    # slow path: protocol models, for tests ---------------------------------------------------
    def roster_model(self, block: int, cars: Sequence[Car]) -> CarRoster:
        e = self.encoder
        return CarRoster(
            sender=self.gateway, sent_at=e.sent_at, sim_time=e.sim_time, block=block,
            cars=[RosterEntry(vehicle_id=car.vehicle_id, state=car.status_state, hardware=car.hardware.generation,
                              reason=car.status_reason, owner_id=owner_of(car), owner_mode=car.owner_mode)
                  for car in cars[block * ROSTER_BLOCK:(block + 1) * ROSTER_BLOCK] if car.status_state is not None],
        )

    def offer_frame_model(self, seq: int, items: Sequence[ComputeOffer | OfferWithdrawal]) -> OfferFrame:
        e = self.encoder
        return OfferFrame(sender=self.gateway, sent_at=e.sent_at, sim_time=e.sim_time, seq=seq, offers=list(items))
