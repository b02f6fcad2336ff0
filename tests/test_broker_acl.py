"""The pure access rules, identities and the Mosquitto files they produce."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.acl import FleetAcl, filter_covers
from broker.mosquitto_config import acl_file, mosquitto_password_hash, password_file
from protocol import Topics
from protocol.identity import Role, check_password, derive_password, role_of

T = Topics("fleet")
ACL = FleetAcl(T)


@pytest.mark.parametrize(
    ("allowed", "requested", "covered"),
    [
        ("a/#", "a/b/c", True), ("a/#", "a/+/c", True), ("a/+/c", "a/b/c", True), ("a/+/c", "a/+/c", True),
        ("a/b", "a/+", False), ("a/+/c", "a/#", False), ("a/b/c", "a/b", False), ("a/b", "a/b/c", False),
        ("a/+", "a/b/c", False),
    ],
)
def test_filter_covers(allowed: str, requested: str, covered: bool) -> None:
    assert filter_covers(allowed, requested) is covered


@given(st.from_regex(r"^car-[a-z0-9]{1,12}$", fullmatch=True), st.from_regex(r"^car-[a-z0-9]{1,12}$", fullmatch=True))
def test_a_car_may_write_only_its_own_namespace(me: str, other: str) -> None:
    assert ACL.may_publish(me, T.telemetry(me)) and ACL.may_publish(me, T.shards(me))
    assert ACL.may_read(me, T.commands(me))
    if other != me:
        assert not ACL.may_publish(me, T.telemetry(other))
        assert not ACL.may_read(me, T.commands(other))
    assert not ACL.may_publish(me, T.commands(me))
    assert not ACL.may_publish(me, T.job_submit)
    assert not ACL.may_read(me, T.all_commands)


def test_roles() -> None:
    assert role_of("dispatcher") is Role.DISPATCHER and role_of("observer") is Role.OBSERVER
    assert role_of("gw-3") is Role.GATEWAY and role_of("car-1a") is Role.VEHICLE
    assert role_of("Bad Name") is None and role_of("") is None and role_of(None) is None
    assert not ACL.may_publish("observer", T.job_submit) and ACL.may_read("observer", T.everything)
    assert ACL.may_publish("operator", T.job_submit) and not ACL.may_publish("operator", T.commands("car-1"))
    assert ACL.may_publish("dispatcher", T.commands("car-1")) and ACL.may_publish("dispatcher", T.summary)
    assert not ACL.may_publish("dispatcher", T.telemetry("car-1"))
    assert not ACL.may_publish(None, T.telemetry("car-1"))


def test_passwords_derive_from_the_secret() -> None:
    pw = derive_password(b"s", "car-1")
    assert check_password(b"s", "car-1", pw)
    assert not check_password(b"t", "car-1", pw) and not check_password(b"s", "car-2", pw)
    assert not check_password(b"s", "car-1", None)


def test_mosquitto_hash_is_pbkdf2_sha512() -> None:
    salt = b"0123456789ab"
    text = mosquitto_password_hash("pw", salt)
    kind, iterations, salt_b64, digest_b64 = text.split("$")[1:]
    assert (kind, iterations, base64.b64decode(salt_b64)) == ("7", "101", salt)
    assert base64.b64decode(digest_b64) == hashlib.pbkdf2_hmac("sha512", b"pw", salt, 101)


def test_mosquitto_files() -> None:
    lines = password_file(b"s", ["dispatcher", "car-1"]).splitlines()
    assert [line.split(":")[0] for line in lines] == ["dispatcher", "car-1"]
    acl = acl_file(T, ["gw-0"])
    assert "pattern write fleet/v1/vehicles/%u/#" in acl and "pattern read fleet/v1/commands/%u" in acl
    assert "user observer\ntopic read fleet/v1/#\n" in acl
    with pytest.raises(ValueError):
        password_file(b"s", ["Not Valid"])
