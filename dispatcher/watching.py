"""The active assignments the engine watches: whose they are, and how long each may stay silent.

Kept so that nothing walks them all: silences come due from a heap of deadlines (an entry whose
assignment was heard since is pushed back with its new deadline when it surfaces), and the TOPS
allocated and the shards running are running totals.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher.claims import ShardMessage
from dispatcher.registry import RATED_TOPS, Registry
from protocol.base import HardwareGeneration
from protocol.job_messages import ShardRefused
from protocol.power import compute_kw


@dataclass(slots=True)
class WatchedAssignment:
    """An active assignment as the engine watches it."""

    vehicle_id: str
    job_id: str
    shard_id: str
    allocated_tops: float
    last_heard_wall: float
    silence_limit_s: float
    compute_kw: float = 0.0  # what its car draws for it, by the power model (set when watched)

    def speaks_for(self, vehicle_id: str, message: ShardMessage) -> bool:
        """Whether a message about this assignment comes from its car and names its shard."""
        named = None if isinstance(message, ShardRefused) else (message.job_id, message.shard_id)
        return self.vehicle_id == vehicle_id and named in (None, (self.job_id, self.shard_id))


def assignment_kw(hardware: str, allocated_tops: float) -> float:
    """The compute power a car of `hardware` draws running `allocated_tops` (`protocol.power`; 0 if unknown)."""
    if hardware not in RATED_TOPS:
        return 0.0
    return compute_kw(HardwareGeneration(hardware), allocated_tops)


class Watchlist:
    """Active assignments by id and by car; each car's count of them, and the power they draw, kept in the registry."""

    def __init__(self, registry: Registry, speed: float = 1.0, now_s: Callable[[], float] = lambda: 0.0) -> None:
        self.registry, self.speed, self.now_s = registry, speed, now_s
        self.watched: dict[str, WatchedAssignment] = {}  # by assignment id
        self.by_car: dict[str, set[str]] = {}  # vehicle -> its active assignment ids
        self._due: list[tuple[float, str]] = []  # (when its silence limit passes, as last known; assignment id)
        self._tops = 0.0
        self._shards: Counter[tuple[str, str]] = Counter()  # (job, shard) -> its active assignments

    def watch(self, aid: str, info: WatchedAssignment) -> None:
        self.watched[aid] = info
        self.by_car.setdefault(info.vehicle_id, set()).add(aid)
        heapq.heappush(self._due, (info.last_heard_wall + info.silence_limit_s, aid))
        self._tops += info.allocated_tops
        self._shards[(info.job_id, info.shard_id)] += 1
        car = self.registry.car(info.vehicle_id)
        self.registry.update(car, active_assignments=car.active_assignments + 1)
        info.compute_kw = assignment_kw(car.hardware, info.allocated_tops)
        self.registry.draw(car, car.compute_kw + info.compute_kw, self.now_s())

    def silence_limit_for(self, checkpoint_interval_s: float) -> float:
        """How long (wall seconds) an assignment may go unmentioned: the heartbeat timeout, or three
        checkpoint intervals of its job if longer."""
        return max(self.registry.heartbeat_timeout_s, 3.0 * checkpoint_interval_s / self.speed)

    def get(self, aid: str) -> WatchedAssignment | None:
        return self.watched.get(aid)

    def unwatch(self, aid: str) -> WatchedAssignment | None:
        info = self.watched.pop(aid, None)
        if info is not None:
            self.by_car.get(info.vehicle_id, set()).discard(aid)
            self._tops -= info.allocated_tops
            shard = (info.job_id, info.shard_id)
            self._shards[shard] -= 1
            if self._shards[shard] <= 0:
                del self._shards[shard]
            car = self.registry.car(info.vehicle_id)
            self.registry.update(car, active_assignments=max(0, car.active_assignments - 1))
            left_kw = max(0.0, car.compute_kw - info.compute_kw) if car.active_assignments else 0.0
            self.registry.draw(car, left_kw, self.now_s())
        return info

    def take_car(self, vehicle_id: str) -> list[str]:
        """The active assignments of a car that is gone, in order; it has none afterwards."""
        return sorted(self.by_car.pop(vehicle_id, ()))

    def silent(self, now_wall: float) -> list[str]:
        """Assignments nobody spoke of for longer than their silence limit (each entry of the heap that comes
        due is either silent, gone, or pushed back to its new deadline)."""
        due, found = self._due, []
        while due and due[0][0] < now_wall:
            _, aid = heapq.heappop(due)
            info = self.watched.get(aid)
            if info is not None:
                found.append((info.last_heard_wall + info.silence_limit_s, aid))
        silent = [aid for deadline, aid in found if deadline < now_wall]
        for entry in found:  # heard since, or silent but still watched until its loss is recorded
            heapq.heappush(due, entry)
        return silent

    @property
    def tops_allocated(self) -> float:
        return max(0.0, self._tops) if self.watched else 0.0

    @property
    def shards_running(self) -> int:
        """Distinct shards with at least one active assignment."""
        return len(self._shards)
