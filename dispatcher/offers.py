"""Where each car's standing offer is: in the book while the car is free, held while it runs our work.

One shard per car: an offer taken by an assignment, or one that arrives while its car runs a
shard, is held and goes back to the book when the shard ends (unless the car withdrew it, left,
or its expected departure has passed). Cars judged unreliable offer nothing. Offers that
arrived or went are remembered until the ledger saves them, once per tick: only a car's last
offer of the tick is written, as the plain numbers of the book (`offer_row`), all in one transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dispatcher.matchmaker import Offer, OfferBook
from protocol.base import HardwareGeneration
from protocol.vehicle_messages import ComputeOffer

if TYPE_CHECKING:
    from dispatcher.ledger import Ledger


def offer_from(message: ComputeOffer, vehicle_id: str, now_s: float, local_s: float | None = None) -> Offer:
    """A car's offer in the ledger's simulation seconds: its times are rebased on our clock, since the
    car's may be set differently; `local_s` is our local time (of day), for the power model's ambient."""
    requirements = message.requirements
    return Offer(  # positional, in the order of Offer's fields: a million offers are built while a fleet joins
        vehicle_id, message.offer_id, message.hardware, message.free_tops, message.price_per_tops_hour, now_s,
        now_s + (message.expected_departure - message.sim_time).total_seconds(), message.departure_confidence,
        message.energy_budget_kwh, message.soc, requirements.min_price_per_tops_hour, requirements.max_shard_hours,
        message.pack_temp_c, local_s,
    )


def offer_row(offer: Offer) -> tuple[object, ...]:
    """An offer as the ledger's `offer_book` keeps it."""
    return (offer.vehicle_id, offer.offer_id, offer.hardware, offer.free_tops, offer.price_per_tops_hour,
            offer.offered_at_s, offer.departure_at_s, offer.departure_confidence, offer.energy_budget_kwh, offer.soc,
            offer.min_price_per_tops_hour, offer.max_shard_hours, offer.pack_temp_c, offer.local_offered_s)


def offer_of_row(row: tuple[Any, ...]) -> Offer:
    """The offer an `offer_book` row keeps (its times on the ledger's clock, which a restart continues)."""
    vid, offer_id, hardware, tops, price, at_s, leave_s, confidence, budget, soc, min_price, max_hours, pack_c, \
        local_s = row
    return Offer(
        vehicle_id=str(vid), offer_id=str(offer_id), hardware=HardwareGeneration(hardware), free_tops=float(tops),
        price_per_tops_hour=float(price), offered_at_s=float(at_s), departure_at_s=float(leave_s),
        departure_confidence=float(confidence), energy_budget_kwh=float(budget), soc=float(soc),
        min_price_per_tops_hour=float(min_price), max_shard_hours=None if max_hours is None else float(max_hours),
        pack_temp_c=None if pack_c is None else float(pack_c),
        local_offered_s=None if local_s is None else float(local_s),
    )


class Offers:
    """The offer book, the offers held for busy cars, the cars barred from offering, and unsaved changes."""

    def __init__(self, book: OfferBook, unreliable: set[str]) -> None:
        self.book = book
        self.unreliable = unreliable  # cars whose results were refused or wrong too often: no more work
        self.held: dict[str, Offer] = {}  # offers of cars that run our work, restored when it ends
        self.unsaved: dict[str, Offer | None] = {}  # vehicle -> its offer (None: gone), for the ledger

    def stand(self, offer: Offer, *, car_busy: bool, save: bool = True) -> None:
        """A car offers: in the book, or held if the car runs a shard; kept in the ledger for a restart if `save`."""
        if save:
            self.unsaved[offer.vehicle_id] = offer
        if car_busy:
            self.held[offer.vehicle_id] = offer
        else:
            self.book.put(offer)

    def drop(self, vehicle_id: str) -> None:
        """The car's offer is gone (withdrawn, the car left or drove): from the book, the held ones, the ledger."""
        in_book = self.book.remove(vehicle_id) is not None
        if self.held.pop(vehicle_id, None) is not None or in_book:
            self.unsaved[vehicle_id] = None

    def hold(self, offer: Offer) -> None:
        """An assignment took this offer from the book: it comes back when the car's shard ends."""
        self.held[offer.vehicle_id] = offer

    def release(self, vehicle_id: str, now_s: float) -> None:
        """The car's shard ended: its held offer stands again, unless the car is barred or due to leave."""
        offer = self.held.pop(vehicle_id, None)
        if offer is not None and vehicle_id not in self.unreliable and offer.departure_at_s > now_s:
            self.book.put(offer)

    def forget_held(self, vehicle_id: str) -> None:
        """The car refused or handed back its shard: its held offer does not come back."""
        self.held.pop(vehicle_id, None)

    def bar(self, vehicle_id: str) -> None:
        """The car gets no more work: its offer goes and later ones are ignored."""
        self.unreliable.add(vehicle_id)
        self.drop(vehicle_id)

    def save(self, ledger: Ledger) -> None:
        """Write the offers that arrived or went since the last save."""
        if self.unsaved:
            unsaved, self.unsaved = self.unsaved, {}
            ledger.save_offers([offer_row(offer) for offer in unsaved.values() if offer is not None],
                               [vid for vid, offer in unsaved.items() if offer is None])
