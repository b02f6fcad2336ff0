"""The pure access rules, identities and the Mosquitto files they produce."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from broker.acl import FleetAcl, filter_covers
from broker.mosquitto_config import MAX_PACKET_BYTES, write_mosquitto_config
from protocol import Channel, Topics
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


VEHICLE_CHANNELS = (Channel.VEHICLE_STATUS, Channel.TELEMETRY, Channel.OFFER, Channel.SHARDS)
ids = st.from_regex(r"^[a-z0-9][a-z0-9_.-]{0,20}$", fullmatch=True)


@given(ids, ids)
def test_the_topic_maps_filters_cover_their_topics_and_no_others(me: str, other: str) -> None:
    """Matched as a client library matches them (paho), not by restating how the filters are spelled."""
    for channel in VEHICLE_CHANNELS:
        topic = T.vehicle(me, channel)
        covering = {T.all_vehicles(channel), T.all_vehicles(), T.vehicle_namespace(me), T.everything}
        assert all(topic_matches_sub(f, topic) for f in covering), (topic, covering)
        assert not any(topic_matches_sub(T.all_vehicles(c), topic) for c in VEHICLE_CHANNELS if c is not channel)
        assert topic_matches_sub(T.vehicle_namespace(other), topic) is (other == me)
        assert not topic_matches_sub(T.all_commands, topic) and not topic_matches_sub(T.all_connections, topic)
    assert topic_matches_sub(T.all_commands, T.commands(me)) and not topic_matches_sub(T.all_vehicles(), T.commands(me))
    assert topic_matches_sub(T.all_connections, T.connection_status(me))
    assert topic_matches_sub(T.all_job_states, T.job_state(me))
    assert not topic_matches_sub(T.all_job_states, T.job_submit)
    assert not topic_matches_sub(T.vehicle_namespace(me), T.commands(me))
    assert not topic_matches_sub(T.everything, Topics("other").telemetry(me))


def test_a_filter_restated_wrongly_would_be_caught() -> None:
    """The check above can fail: a filter one level too short covers nothing of its channel."""
    assert not topic_matches_sub(f"{T.root}/vehicles/+", T.telemetry("car-1"))
    assert not topic_matches_sub(T.all_vehicles(Channel.OFFER), T.telemetry("car-1"))


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


def test_mosquitto_files(tmp_path: Path) -> None:
    plugin = tmp_path / "built" / "fleetroom_auth.so"
    paths = write_mosquitto_config(tmp_path / "mq", b"s3cret", T, port=18830, plugin=plugin,
                                   extra_lines=["certfile /x/server.pem"])
    conf, secret, rules = (tmp_path / "mq" / name for name in ("mosquitto.conf", "secret", "rules"))
    assert paths == [conf, secret, rules, plugin]
    assert secret.read_bytes() == b"s3cret" and oct(secret.stat().st_mode & 0o777) == "0o600"
    assert "publish vehicle fleet/v1/vehicles/%u/telemetry" in rules.read_text()
    lines = conf.read_text().splitlines()
    for line in ("allow_anonymous false", f"plugin {plugin}", f"plugin_opt_secret_file {secret}",
                 f"plugin_opt_rules_file {rules}", f"max_packet_size {MAX_PACKET_BYTES}", "persistence false"):
        assert line in lines
    assert lines.index("certfile /x/server.pem") == lines.index("listener 18830 127.0.0.1") + 1
    assert not any(line.startswith(("password_file", "acl_file", "log_dest")) for line in lines)


@pytest.mark.parametrize("secret", [b"", b" padded", b"line\n"])
def test_mosquitto_files_need_a_secret_without_surrounding_white_space(tmp_path: Path, secret: bytes) -> None:
    with pytest.raises(ValueError, match="white space"):
        write_mosquitto_config(tmp_path, secret, T, plugin=tmp_path / "p.so")
