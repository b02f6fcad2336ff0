"""Which cars' telemetry the control room subscribes to: the rows in view and the cars drilled into. Pure.

Every car's state comes from statuses and rosters, on a few wildcard subscriptions. Telemetry is
the bulk of the fleet's traffic (a message per car per interval), so, as k9s watches only its
view, the control room subscribes to the telemetry of the cars it shows: the node table's
visible rows and the car screens open, at most `limit` cars. The wanted set settles for
`settle_s` before it is applied (scrolling through a million rows subscribes to none of the rows
flown past), and new subscriptions are made before old ones are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WatchChange:
    """Cars to subscribe to and to unsubscribe from, in that order."""

    add: tuple[str, ...]
    remove: tuple[str, ...]


class TelemetryWatch:
    """The wanted and the subscribed set of cars whose telemetry the control room reads."""

    def __init__(self, *, limit: int = 200, settle_s: float = 0.4) -> None:
        self.limit = limit
        self.settle_s = settle_s
        self.subscribed: set[str] = set()
        self.wanted: frozenset[str] = frozenset()
        self._wanted_since = float("-inf")

    def want(self, pinned: Iterable[str], visible: Iterable[str], now: float) -> None:
        """The cars to watch now: `pinned` (drilled into) first, then `visible` rows, at most `limit`."""
        chosen: dict[str, None] = {}
        for vid in (*pinned, *visible):
            if len(chosen) >= self.limit:
                break
            chosen[vid] = None
        wanted = frozenset(chosen)
        if wanted != self.wanted:
            self.wanted, self._wanted_since = wanted, now

    def change(self, now: float) -> WatchChange | None:
        """What to subscribe and unsubscribe, once the wanted set has settled; None if nothing."""
        if self.wanted == self.subscribed or now - self._wanted_since < self.settle_s:
            return None
        return WatchChange(tuple(sorted(self.wanted - self.subscribed)), tuple(sorted(self.subscribed - self.wanted)))

    def applied(self, change: WatchChange) -> None:
        """Record that the broker has both halves of `change`."""
        self.subscribed.update(change.add)
        self.subscribed.difference_update(change.remove)

    def lost(self) -> None:
        """The connection is gone, and its subscriptions with it: a new session starts from none."""
        self.subscribed.clear()
