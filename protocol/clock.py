"""The one simulation clock: simulated time runs `speed` times faster than wall time.

Processes that share a fleet are given the same origin (`--sim-start`), the same speed and the
same epoch (`--sim-epoch`, the Unix time at which the simulation stood at its origin), so their
simulation times agree however far apart they were started, and a process restarted later picks
up where the others are. Without an epoch a clock starts at its origin when it is built. Wall
time is used only for `sent_at` and latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class SimClock:
    """Maps a wall clock (monotonic seconds) to simulation time."""

    def __init__(
        self,
        speed: float = 1.0,
        sim_start: datetime | None = None,
        wall: Callable[[], float] = time.monotonic,
        epoch: float | None = None,
        unix: Callable[[], float] = time.time,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.sim_start = sim_start or datetime.now(UTC).replace(microsecond=0)
        if self.sim_start.tzinfo is None:
            raise ValueError("sim_start must be timezone-aware")
        self._wall = wall
        # the monotonic reading at which the simulation stood at sim_start (past, with an epoch)
        self._wall_start = wall() - (0.0 if epoch is None else unix() - epoch)

    def elapsed_sim_s(self) -> float:
        """Simulated seconds since the origin."""
        return (self._wall() - self._wall_start) * self.speed

    def now(self) -> datetime:
        """The current simulation time."""
        return self.sim_start + timedelta(seconds=self.elapsed_sim_s())

    def wall_seconds_for(self, sim_seconds: float) -> float:
        """How long `sim_seconds` of simulated time take on the wall."""
        return sim_seconds / self.speed


class ManualClock:
    """A clock that moves only when told, for the pure cores' tests."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
