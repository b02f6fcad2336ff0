"""The fleet's access rules as topic filters per role, shared by amqtt and Mosquitto configs.

`%u` in a rule stands for the user's own name, as in Mosquitto's `pattern` lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.fleet_telemetry import default_base
from protocol.identity import Role, role_of
from protocol.topics import VEHICLE_LEAF, Topics


@dataclass(frozen=True, slots=True)
class RoleRules:
    """The filters a role may publish to, publish retained messages to, and read from.

    `retain` is a subset of `publish`: a retained message anywhere else is refused, so what a
    broker keeps for late subscribers is bounded by the topic map (one status per car, one per
    process, one state per job, one summary), never by what a client chooses to send.
    """

    publish: tuple[str, ...]
    read: tuple[str, ...]
    retain: tuple[str, ...] = ()


VEHICLE_LEAVES = tuple(VEHICLE_LEAF.values())  # the topic map's own leaves: a new channel is ACL'd with it


def rules_for(topics: Topics) -> dict[Role, RoleRules]:
    """Every role's rules under `topics`' root."""
    r = topics.root
    own_status = f"{r}/connections/%u/status"
    # fleet-telemetry records (`--telemetry-format fleet-telemetry`): a car's fields and connectivity, never retained
    ft = default_base(topics)
    own_car = (*(f"{r}/vehicles/%u/{leaf}" for leaf in VEHICLE_LEAVES), f"{ft}/%u/v/+", f"{ft}/%u/connectivity")
    any_car = (*(f"{r}/vehicles/+/{leaf}" for leaf in VEHICLE_LEAVES), f"{ft}/+/v/+", f"{ft}/+/connectivity")
    earnings = (f"{r}/dispatcher/earnings", f"{r}/dispatcher/earnings/cars/+")
    # a gateway's frames (protocol.frames) go only below its own name; which cars it may speak
    # for in them is checked by the receivers, as per-car topics cannot say it
    own_rosters, own_offer_frames = f"{r}/gateways/%u/roster/+", f"{r}/gateways/%u/offers"
    return {
        Role.VEHICLE: RoleRules(publish=own_car, read=(f"{r}/commands/%u",), retain=(f"{r}/vehicles/%u/status",)),
        Role.GATEWAY: RoleRules(
            publish=(*any_car, own_rosters, own_offer_frames, own_status),
            read=(f"{r}/commands/+", f"{r}/control/fleet", f"{r}/connections/+/status"),
            retain=(f"{r}/vehicles/+/status", own_rosters, own_status),
        ),
        Role.DISPATCHER: RoleRules(
            publish=(f"{r}/commands/+", f"{r}/jobs/+/state", f"{r}/dispatcher/summary", *earnings, own_status),
            read=(f"{r}/#", f"{ft}/#"),
            retain=(f"{r}/jobs/+/state", f"{r}/dispatcher/summary", *earnings, own_status),
        ),
        Role.OPERATOR: RoleRules(
            publish=(f"{r}/jobs/submit", f"{r}/control/dispatcher", f"{r}/control/fleet", own_status),
            read=(f"{r}/#", f"{ft}/#"),
            retain=(own_status,),
        ),
        Role.OBSERVER: RoleRules(publish=(), read=(f"{r}/#", f"{ft}/#")),
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


MAX_EXPANDED_USERS = 100_000  # (user, kind) pairs kept expanded; beyond, filters are expanded per call


class FleetAcl:
    """Decides publish and read rights for a user under one topic root."""

    def __init__(self, topics: Topics) -> None:
        self._rules = rules_for(topics)
        # a user's filters, expanded once: the broker asks on every message it routes
        self._expanded: dict[tuple[str, str], tuple[str, ...]] = {}

    def _filters(self, username: str | None, kind: str) -> tuple[str, ...]:
        if username is None:
            return ()
        found = self._expanded.get((username, kind))
        if found is None:
            role = role_of(username)
            filters: tuple[str, ...] = getattr(self._rules[role], kind) if role is not None else ()
            found = tuple(f.replace("%u", username) for f in filters)
            if len(self._expanded) < MAX_EXPANDED_USERS:  # bounded, whatever the number of logins
                self._expanded[(username, kind)] = found
        return found

    def may_publish(self, username: str | None, topic: str, *, retain: bool = False) -> bool:
        """True if `username` may publish to the concrete `topic` (retained, if `retain`)."""
        if "+" in topic or "#" in topic:
            return False
        return any(filter_covers(f, topic) for f in self._filters(username, "retain" if retain else "publish"))

    def may_read(self, username: str | None, topic_filter: str) -> bool:
        """True if `username` may subscribe to `topic_filter` (or receive on a concrete topic)."""
        return any(filter_covers(f, topic_filter) for f in self._filters(username, "read"))
