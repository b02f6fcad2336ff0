"""The ledger's clock: the dispatcher's simulation clock, continued across a restart that did not share
`--sim-epoch`, and recorded in the ledger once a wall second."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dispatcher.credit import CLOCK_SLACK_WALL_S, Moment

if TYPE_CHECKING:
    from dispatcher.ledger import Ledger

SAVE_EVERY_WALL_S = 1.0


def clock_offset(last: tuple[float, float] | None, sim_now_s: float, unix_now_s: float, speed: float) -> float:
    """How far behind the ledger's last recorded time (plus the wall time since) a clock starts.

    `last` is (simulation seconds, Unix seconds) the ledger recorded. Processes sharing
    `--sim-epoch` agree and this is 0; a dispatcher restarted without one would start its clock
    again from `--sim-start`, so it continues the ledger's instead, and assignments made before
    the restart keep the time their cars really had.
    """
    if last is None:
        return 0.0
    sim_s, unix_s = last
    behind = sim_s + max(0.0, unix_now_s - unix_s) * speed - sim_now_s
    return behind if behind > CLOCK_SLACK_WALL_S * speed else 0.0


class LedgerClock:
    """Simulation seconds as the ledger counts them, the slack granted to cars, and wall time."""

    def __init__(
        self, ledger: Ledger, *, sim_now: Callable[[], datetime], wall: Callable[[], float],
        unix: Callable[[], float], speed: float,
    ) -> None:
        self.ledger, self.sim_now, self.wall, self.unix, self.speed = ledger, sim_now, wall, unix, speed
        self.offset_s = clock_offset(ledger.last_clock(), sim_now().timestamp(), unix(), speed)
        self._saved_at_wall = -1e18

    @property
    def now_s(self) -> float:
        """The ledger's simulation seconds (see `clock_offset`)."""
        return self.sim_now().timestamp() + self.offset_s

    def moment(self) -> Moment:
        """Now, with the slack granted to cars' clocks: when a ledger event is applied."""
        return Moment(self.now_s, CLOCK_SLACK_WALL_S * self.speed)

    def on_cars_clock(self, ledger_s: float) -> datetime:
        """A time on the ledger's clock as the cars' clock shows it (their clock was not continued)."""
        return datetime.fromtimestamp(ledger_s - self.offset_s, UTC)

    def save_if_due(self) -> None:
        """Record the clock in the ledger, at most once a wall second, for a restart to continue it."""
        now = self.wall()
        if now - self._saved_at_wall >= SAVE_EVERY_WALL_S:
            self._saved_at_wall = now
            self.ledger.save_clock(self.now_s, self.unix())
