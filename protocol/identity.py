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
import secrets
from enum import StrEnum

SECRET_ENV = "FLEETROOM_SECRET"

# user names are safe topic levels; fullmatch, so a trailing newline is not let through by `$`
_USER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
CLIENT_ID_SEPARATOR = ":"  # never in a user name, so `name:` cannot be another user's prefix
CLIENT_ID_RANDOM_BYTES = 6


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
    if not _USER_NAME.fullmatch(username):
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
    # compare bytes: `compare_digest` refuses two str with non-ASCII characters (a TypeError, not a "no")
    given = password.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(derive_password(secret, username).encode(), given)


def client_id_for(name: str) -> str:
    """A fresh client id owned by user `name`: the name, ':' and 48 random bits.

    With fleet credentials both brokers accept a client id only from its owner (see
    `owns_client_id`), and the random part means nobody can predict a running process's id
    from its name or the fleet's seed.
    """
    return f"{name}{CLIENT_ID_SEPARATOR}{secrets.token_hex(CLIENT_ID_RANDOM_BYTES)}"


def owns_client_id(username: str | None, client_id: str | None) -> bool:
    """True if `username` may connect with `client_id`: the name itself, or `name:` and a suffix."""
    if not username or not client_id:
        return False
    return client_id == username or client_id.startswith(username + CLIENT_ID_SEPARATOR)


def client_owner(client_id: str) -> str:
    """The user name a client id of the fleet's form belongs to (the part before ':')."""
    return client_id.split(CLIENT_ID_SEPARATOR, 1)[0]
