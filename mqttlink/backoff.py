"""Exponential backoff with full jitter, the one retry schedule every reconnect uses."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays that double from `initial_s` up to `max_s`, each drawn uniformly below the cap."""

    initial_s: float = 0.2
    max_s: float = 10.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; grows with each call until `reset`."""
        cap = min(self.max_s, self.initial_s * (2**self.attempt))
        self.attempt += 1
        return self.rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        """Start again from the shortest delay (after a connection succeeded)."""
        self.attempt = 0
