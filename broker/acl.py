"""The fleet's access rules as topic filters per role, shared by amqtt and Mosquitto configs.

`%u` in a rule stands for the user's own name, as in Mosquitto's `pattern` lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.identity import Role, role_of
from protocol.topics import Topics


@dataclass(frozen=True, slots=True)
class RoleRules:
    """The filters a role may publish to and read from."""

    publish: tuple[str, ...]
    read: tuple[str, ...]


def rules_for(topics: Topics) -> dict[Role, RoleRules]:
    """Every role's rules under `topics`' root."""
    r = topics.root
    own_status = f"{r}/connections/%u/status"
    return {
        Role.VEHICLE: RoleRules(publish=(f"{r}/vehicles/%u/#",), read=(f"{r}/commands/%u",)),
        Role.GATEWAY: RoleRules(
            publish=(f"{r}/vehicles/+/#", own_status),
            read=(f"{r}/commands/+", f"{r}/control/fleet", f"{r}/connections/+/status"),
        ),
        Role.DISPATCHER: RoleRules(
            publish=(f"{r}/commands/+", f"{r}/jobs/+/state", f"{r}/dispatcher/#", own_status),
            read=(f"{r}/#",),
        ),
        Role.OPERATOR: RoleRules(
            publish=(f"{r}/jobs/submit", f"{r}/control/#", own_status),
            read=(f"{r}/#",),
        ),
        Role.OBSERVER: RoleRules(publish=(), read=(f"{r}/#",)),
    }


def filter_covers(allowed: str, requested: str) -> bool:
    """True if every topic matched by `requested` is matched by `allowed`.

    A wildcard in `requested` is covered only by the same wildcard or a wider one in `allowed`,
    so a car cannot subscribe to `commands/+` when it may read only `commands/its-id`.
    """
    want = requested.split("/")
    have = allowed.split("/")
    for i, level in enumerate(have):
        if level == "#":
            return True
        if i >= len(want):
            return False
        if level == "+":
            if want[i] == "#":
                return False
            continue
        if want[i] != level:
            return False
    return len(want) == len(have)


class FleetAcl:
    """Decides publish and read rights for a user under one topic root."""

    def __init__(self, topics: Topics) -> None:
        self._rules = rules_for(topics)

    def _filters(self, username: str | None, publish: bool) -> tuple[str, ...]:
        role = role_of(username)
        if role is None or username is None:
            return ()
        rules = self._rules[role]
        filters = rules.publish if publish else rules.read
        return tuple(f.replace("%u", username) for f in filters)

    def may_publish(self, username: str | None, topic: str) -> bool:
        """True if `username` may publish to the concrete `topic`."""
        if "+" in topic or "#" in topic:
            return False
        return any(filter_covers(f, topic) for f in self._filters(username, publish=True))

    def may_read(self, username: str | None, topic_filter: str) -> bool:
        """True if `username` may subscribe to `topic_filter` (or receive on a concrete topic)."""
        return any(filter_covers(f, topic_filter) for f in self._filters(username, publish=False))
