"""Who connects to the fleet's broker: roles by user name, and per-user passwords.

Every user's password is derived from one fleet secret with HMAC-SHA256, so a broker can
check a million cars without storing a million entries, and a fleet process that holds the
secret can log each of its cars in under the car's own name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from enum import StrEnum

SECRET_ENV = "FLEETROOM_SECRET"

_VEHICLE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class Role(StrEnum):
    """What a user of the fleet broker may do."""

    VEHICLE = "vehicle"  # writes only its own namespace, reads only its own commands
    GATEWAY = "gateway"  # a fleet process speaking for many cars over one connection
    DISPATCHER = "dispatcher"  # assigns work, publishes job states and the summary
    OPERATOR = "operator"  # the control room in read-write mode: submits jobs, sends commands
    OBSERVER = "observer"  # the control room in read-only mode: reads everything, writes nothing


FIXED_USERS: dict[str, Role] = {
    "dispatcher": Role.DISPATCHER,
    "operator": Role.OPERATOR,
    "observer": Role.OBSERVER,
}
GATEWAY_PREFIX = "gw-"


def role_of(username: str | None) -> Role | None:
    """The role a user name stands for, or None if it names nobody."""
    if not username:
        return None
    if username in FIXED_USERS:
        return FIXED_USERS[username]
    if not _VEHICLE_ID.match(username):
        return None
    if username.startswith(GATEWAY_PREFIX):
        return Role.GATEWAY
    return Role.VEHICLE


def derive_password(secret: bytes, username: str) -> str:
    """The password of `username` under the fleet `secret`."""
    digest = hmac.new(secret, b"fleetroom-user:" + username.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def check_password(secret: bytes, username: str, password: str | None) -> bool:
    """True if `password` is the one `derive_password` gives for `username`."""
    if password is None:
        return False
    return hmac.compare_digest(derive_password(secret, username), password)
