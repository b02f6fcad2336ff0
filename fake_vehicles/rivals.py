"""Whether another fleet process runs this one's cars: read from the process statuses.

Two fleet processes started with the same seed (and meeting shards) would speak for the same
cars under the same names. Each one names its retained process status after its gateway name
and stamps it with its `instance` (start time and random bits). On every connection, once the
retained statuses have arrived and before saying anything, a process looks for another instance
online under a name that shares its cars. A retained status can outlive its process (a broker
restarted with persistence, a Will not yet published), so it only makes a suspect: the process
waits up to `confirm_s` for the suspect to speak (a status published now, not sent as retained),
and claims the name if it does not, or goes offline. Once the name is claimed, a rival that
speaks means two claimed it at once (a race, or both reconnecting after a broker restart): the
later-started instance gives way, whatever order the broker delivered things in.

Pure: statuses, connection numbers and the monotonic clock come in as arguments.
"""

from __future__ import annotations

import secrets
import time
from enum import StrEnum

from fake_vehicles.ids import shares_cars
from protocol.vehicle_messages import ConnectionStatus, Liveness


def new_instance() -> str:
    """An instance token: start time in milliseconds (hex, so later sorts after) and 32 random bits."""
    return f"{time.time_ns() // 1_000_000:012x}.{secrets.token_hex(4)}"


class Verdict(StrEnum):
    """What a process status means for this process."""

    NOTHING = "nothing"
    CONFLICT = "conflict"  # stop: another live instance holds (some of) our cars
    REASSERT = "reassert"  # a later instance spoke for our cars: say again who holds them


class NameGuard:
    """Decides, connection by connection, whether this process may speak under its name."""

    def __init__(self, name: str, instance: str, confirm_s: float) -> None:
        self.name, self.instance, self.confirm_s = name, instance, confirm_s
        self.claimed = False  # on connection number `session`
        self.session: int | None = None  # the connection whose check began last
        self.conflict: str | None = None  # the one line for the user, once a live rival is proven
        self._online: dict[str, int] = {}  # rival name -> connection on which it was last seen online
        self._suspects: set[str] = set()  # rivals online when this connection's check began
        self._deadline = 0.0

    def _message(self, rival: str) -> str:
        same = "" if rival == self.name else ", which runs some of the same cars"
        return f"another fleet process is running as {rival}{same}: start this one with another --seed or --shard"

    def seen(self, status: ConnectionStatus, session: int, *, retained: bool) -> Verdict:
        """Take in one process status read on connection number `session`; `retained` if sent on subscribing."""
        if status.role != "gateway" or not shares_cars(self.name, status.sender):
            return Verdict.NOTHING
        if status.sender == self.name and status.instance == self.instance:
            return Verdict.NOTHING  # our own status (retained, or our heartbeat coming back)
        if status.state is not Liveness.ONLINE:
            self._online.pop(status.sender, None)
            self._suspects.discard(status.sender)
            return Verdict.NOTHING
        self._online[status.sender] = session
        if self.conflict is not None:
            return Verdict.CONFLICT
        if retained or session != self.session:
            return Verdict.NOTHING  # what the broker kept: a suspect until it speaks
        if self.claimed and status.instance > self.instance:
            return Verdict.REASSERT  # the later one gives way; it hears our heartbeat and stops
        self.conflict = self._message(status.sender)
        self.claimed = False
        return Verdict.CONFLICT

    def begin_check(self, session: int, now: float) -> bool:
        """The retained statuses of connection `session` are in: claim the name now if nobody holds it.

        Returns True if the name is claimed; otherwise `poll` claims it once every suspect has
        gone offline or said nothing for `confirm_s`.
        """
        self.claimed, self.session = False, session
        self._online = {name: seen for name, seen in self._online.items() if seen == session}
        self._suspects = set(self._online)
        self._deadline = now + self.confirm_s
        return self.poll(now)

    def poll(self, now: float) -> bool:
        """Claim the name if the check found nobody, or its suspects proved stale; True once claimed."""
        if self.conflict is not None or self.session is None:
            return False
        if not self.claimed and (not self._suspects or now >= self._deadline):
            self.claimed = True
            self._suspects.clear()
        return self.claimed

    def may_speak(self, session: int) -> bool:
        """True if this process has claimed its name on connection number `session`."""
        return self.claimed and self.session == session and self.conflict is None

    @property
    def waiting_for(self) -> list[str]:
        """The rivals this check waits to hear from."""
        return sorted(self._suspects) if not self.claimed else []
