"""Matchmaking: compute offers indexed by hardware and quarter-octave TOPS level, one heap per bucket.

Requirements and rank on both sides, in the manner of HTCondor's ClassAds: a job requires a
hardware generation, TOPS per car and a price cap and ranks cars by the policy in force; a car
requires a minimum price and a maximum shard length. A decision looks only at the heads of the
buckets that can satisfy the job (generations at or above its floor x the TOPS levels in use
whose upper bound is above its TOPS floor), so its cost grows with log(offers), not with the
fleet. Changing the policy re-heapifies once, O(offers).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Container, Iterator
from dataclasses import dataclass, field

from protocol import power
from protocol.base import HardwareGeneration
from protocol.fleet_messages import MatchPolicy

HW_RANK: dict[HardwareGeneration, int] = {
    HardwareGeneration.HW3: 0,
    HardwareGeneration.HW4: 1,
    HardwareGeneration.HW5: 2,
    HardwareGeneration.HW6: 3,
}
WATTS_PER_TOPS: dict[HardwareGeneration, float] = {g: hw.watts_per_tops for g, hw in power.HARDWARE_POWER.items()}
"""Full-load watts per TOPS, from the fleet's own power model (`protocol.power`)."""
LEVELS_PER_OCTAVE = 4  # a bucket spans a factor 2**(1/4) of TOPS, so few entries straddle a TOPS floor
MAX_LEVEL = 40 * LEVELS_PER_OCTAVE
PROBE_BUDGET = 256  # entries a decision may step over (failing a per-entry requirement) before giving up


def kwh_per_tera_op(hardware: HardwareGeneration) -> float:
    """Energy per tera-operation on `hardware`, as the fleet's power model has it."""
    return power.HARDWARE_POWER[hardware].kwh_per_tera_op


def tops_level(free_tops: float) -> int:
    """The bucket level of a TOPS figure: a bucket spans [2**(l/k), 2**((l+1)/k)), k levels per octave."""
    if free_tops <= 1.0:
        return 0
    return min(MAX_LEVEL, math.floor(LEVELS_PER_OCTAVE * math.log2(free_tops)))


@dataclass(slots=True)
class Offer:
    """One car's standing offer, in plain numbers (simulation seconds since the epoch)."""

    vehicle_id: str
    offer_id: str
    hardware: HardwareGeneration
    free_tops: float
    price_per_tops_hour: float
    offered_at_s: float
    departure_at_s: float
    departure_confidence: float = 1.0
    energy_budget_kwh: float = math.inf
    soc: float = 1.0
    min_price_per_tops_hour: float = 0.0
    max_shard_hours: float | None = None
    pack_temp_c: float | None = None  # None: unknown, planned as warm as a car that may offer can be
    local_offered_s: float | None = None  # local time of day at `offered_at_s`, for the ambient; None: unknown
    seq: int = -1

    @property
    def asking_price(self) -> float:
        """The price per TOPS-hour this car is paid: its own ask, never below its minimum."""
        return max(self.price_per_tops_hour, self.min_price_per_tops_hour)

    @property
    def likely_leave_s(self) -> float:
        """Expected departure discounted by confidence: an unsure car is assumed to leave sooner."""
        return self.offered_at_s + self.departure_confidence * max(0.0, self.departure_at_s - self.offered_at_s)


@dataclass(frozen=True, slots=True)
class Need:
    """What one shard of a job needs from a car."""

    min_tops: float
    min_hardware: HardwareGeneration | None = None
    price_cap: float | None = None
    work_tera_ops: float = 1.0  # the work left in the shard
    checkpoint_interval_s: float = 60.0


FASTEST, CHEAPEST, DEPARTURE_AWARE = MatchPolicy.FASTEST, MatchPolicy.CHEAPEST, MatchPolicy.DEPARTURE_AWARE


def policy_score(policy: MatchPolicy, offer: Offer) -> float:
    """The job's rank of a car under `policy`; lower is better (heap order)."""
    if policy is FASTEST:
        return -offer.free_tops
    if policy is CHEAPEST:
        return offer.asking_price
    if policy is DEPARTURE_AWARE:
        return -offer.likely_leave_s
    return WATTS_PER_TOPS[offer.hardware] * (2.0 - offer.soc)


def failed_requirement(policy: MatchPolicy, need: Need, offer: Offer, now_s: float) -> str | None:
    """The first requirement (either side's) that `offer` fails for `need`, or None if it matches."""
    if need.min_hardware is not None and HW_RANK[offer.hardware] < HW_RANK[need.min_hardware]:
        return f"hardware >= {need.min_hardware.value}"
    if offer.free_tops < need.min_tops:
        return f"free TOPS >= {need.min_tops:g}"
    if need.price_cap is not None and offer.asking_price > need.price_cap:
        return f"price <= cap {need.price_cap:g}/TOPS-h"
    hours = need.work_tera_ops / offer.free_tops / 3600.0
    if offer.max_shard_hours is not None and hours > offer.max_shard_hours:
        return "car's max shard hours"
    if offer.departure_at_s <= now_s:
        return "car still parked (departure passed)"
    if policy is MatchPolicy.DEPARTURE_AWARE:
        stay = offer.likely_leave_s - now_s
        if stay < min(need.checkpoint_interval_s, hours * 3600.0):
            return "likely parked for one checkpoint interval"
    if policy is MatchPolicy.ENERGY_AWARE:
        return energy_refusal(need, offer, now_s)
    return None


def energy_refusal(need: Need, offer: Offer, now_s: float) -> str | None:
    """Why the fleet's power model says `offer`'s car cannot finish the shard in one go (battery or heat).

    The car is planned on a charger (the warmer case) from its reported pack temperature, or
    from HOT_RESUME_C if it did not say; without its local time, at the hottest hour of the day.
    Energy from a charger is not counted on: the battery budget alone must cover the shard.
    """
    if offer.local_offered_s is None:
        local_s = power.AMBIENT_PEAK_HOUR * 3600.0
    else:
        local_s = offer.local_offered_s + max(0.0, now_s - offer.offered_at_s)
    pack_c = power.HOT_RESUME_C if offer.pack_temp_c is None else offer.pack_temp_c
    return power.shard_refusal(offer.hardware, offer.free_tops, need.work_tera_ops,
                               energy_budget_kwh=offer.energy_budget_kwh, pack_c=pack_c, local_s=local_s,
                               charging=True)


def _replace_at(heap: list[tuple[float, int, str]], index: int, item: tuple[float, int, str]) -> None:
    """Put `item` at `index` and restore the heap order (heapq's own sift helpers, either way)."""
    heap[index] = item
    if index > 0 and item < heap[(index - 1) // 2]:
        heapq._siftdown(heap, 0, index)  # type: ignore[attr-defined]
    else:
        heapq._siftup(heap, index)  # type: ignore[attr-defined]


@dataclass(slots=True)
class _Bucket:
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    size: int = 0


class OfferBook:
    """All standing offers, one per car, indexed for matchmaking under one policy at a time."""

    def __init__(self, policy: MatchPolicy = MatchPolicy.FASTEST) -> None:
        self.policy = policy
        self.offers: dict[str, Offer] = {}
        self._buckets: dict[tuple[int, int], _Bucket] = {}
        self._seq = itertools.count()
        self.tops_offered = 0.0

    def __len__(self) -> int:
        return len(self.offers)

    def __contains__(self, vehicle_id: object) -> bool:
        return vehicle_id in self.offers

    def put(self, offer: Offer) -> None:
        """Add or replace the offer of `offer.vehicle_id`."""
        vehicle_id, offers = offer.vehicle_id, self.offers
        if vehicle_id in offers:
            self.remove(vehicle_id)
        offer.seq = seq = next(self._seq)
        offers[vehicle_id] = offer
        self.tops_offered += offer.free_tops
        key = (HW_RANK[offer.hardware], tops_level(offer.free_tops))
        bucket = self._buckets.get(key)
        if bucket is None:  # not setdefault: a new _Bucket per offer costs a microsecond at a million offers
            bucket = self._buckets[key] = _Bucket()
        bucket.size += 1
        score = -offer.free_tops if self.policy is FASTEST else policy_score(self.policy, offer)
        heapq.heappush(bucket.heap, (score, seq, vehicle_id))

    def remove(self, vehicle_id: str) -> Offer | None:
        """Withdraw a car's offer (its heap entry goes stale and is skipped later)."""
        offer = self.offers.pop(vehicle_id, None)
        if offer is None:
            return None
        self.tops_offered -= offer.free_tops
        bucket = self._buckets[self._key(offer)]
        bucket.size -= 1
        if len(bucket.heap) > 64 and len(bucket.heap) > 4 * bucket.size:
            bucket.heap = [item for item in bucket.heap if self._live(item)]
            heapq.heapify(bucket.heap)
        return offer

    def set_policy(self, policy: MatchPolicy) -> None:
        """Rank by another policy from now on: one pass over the offers."""
        self.policy = policy
        heaps: dict[tuple[int, int], list[tuple[float, int, str]]] = {key: [] for key in self._buckets}
        for offer in self.offers.values():
            heaps[self._key(offer)].append((policy_score(policy, offer), offer.seq, offer.vehicle_id))
        for key, heap in heaps.items():
            heapq.heapify(heap)
            self._buckets[key].heap = heap

    def match(self, need: Need, now_s: float, exclude: Container[str] = ()) -> Offer | None:
        """Take the best offer that meets `need` out of the book, or return None."""
        budget = [PROBE_BUDGET]
        best: tuple[tuple[float, int, str], tuple[int, int], int] | None = None
        for key in self._candidate_keys(need):
            found = self._head(key, need, now_s, exclude, budget)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], key, found[1])
        if best is None:
            return None
        item, key, index = best
        heap = self._buckets[key].heap
        last = heap.pop()  # take the chosen entry out of its heap now, so no stale entry stays near the top
        if index < len(heap):
            _replace_at(heap, index, last)
        return self.remove(item[2])

    def _candidate_keys(self, need: Need) -> Iterator[tuple[int, int]]:
        floor_rank = HW_RANK[need.min_hardware] if need.min_hardware is not None else 0
        for key, bucket in self._buckets.items():
            if bucket.size and key[0] >= floor_rank and 2.0 ** ((key[1] + 1) / LEVELS_PER_OCTAVE) > need.min_tops:
                yield key

    def _head(
        self, key: tuple[int, int], need: Need, now_s: float, exclude: Container[str], budget: list[int]
    ) -> tuple[tuple[float, int, str], int] | None:
        """The best entry of one bucket that meets `need`, and its position in the heap.

        Entries are visited in rank order without changing the heap (a small frontier heap of
        positions walks it), so stepping over cars that fail this job costs no heap surgery.
        """
        heap = self._buckets[key].heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        frontier: list[tuple[tuple[float, int, str], int]] = [(heap[0], 0)] if heap else []
        while frontier:
            item, index = heapq.heappop(frontier)
            if self._live(item):
                offer = self.offers[item[2]]
                if offer.vehicle_id not in exclude and failed_requirement(self.policy, need, offer, now_s) is None:
                    return item, index
                if budget[0] <= 0:
                    return None
                budget[0] -= 1
            for child in (2 * index + 1, 2 * index + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))
        return None

    def _live(self, item: tuple[float, int, str]) -> bool:
        offer = self.offers.get(item[2])
        return offer is not None and offer.seq == item[1]

    @staticmethod
    def _key(offer: Offer) -> tuple[int, int]:
        return (HW_RANK[offer.hardware], tops_level(offer.free_tops))

    def analyze(
        self, need: Need, now_s: float, exclude: Container[str] = (), sample_limit: int = 20_000
    ) -> tuple[dict[str, int], bool]:
        """How many offering cars fail each requirement (first failure counted), and whether sampled."""
        counts: dict[str, int] = {}
        seen = 0
        for offer in itertools.islice(self.offers.values(), sample_limit):
            seen += 1
            reason = "car already ran this shard" if offer.vehicle_id in exclude else None
            reason = reason or failed_requirement(self.policy, need, offer, now_s)
            if reason is not None:
                counts[reason] = counts.get(reason, 0) + 1
        sampled = seen < len(self.offers)
        if sampled and seen:
            scale = len(self.offers) / seen
            counts = {reason: round(n * scale) for reason, n in counts.items()}
        return counts, sampled
