"""The wire contract: round trips, and every way a payload is rejected."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from protocol import (
    CHANNEL_KINDS,
    MAX_PAYLOAD_BYTES,
    AnyMessage,
    ProtocolError,
    ShardAssignment,
    Topics,
    VehicleTelemetry,
    decode,
    decode_on,
    encode,
)
from tests.support.samples import all_samples, telemetry

SAMPLES = all_samples()


def test_every_message_kind_has_a_sample_and_a_channel() -> None:
    kinds = {type(m) for m in SAMPLES}
    channelled = set().union(*CHANNEL_KINDS.values())
    union_members = set(get_args(get_args(AnyMessage)[0]))
    assert kinds == channelled == union_members


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.kind)
def test_round_trip(message: object) -> None:
    data = encode(message)  # type: ignore[arg-type]
    assert isinstance(data, bytes)
    assert decode(data) == message


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.kind)
def test_extra_field_is_rejected(message: object) -> None:
    obj = json.loads(encode(message))  # type: ignore[arg-type]
    obj["surprise"] = 1
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps(obj).encode())
    assert info.value.reason == "invalid"


def test_unknown_kind_is_rejected() -> None:
    obj = json.loads(encode(SAMPLES[0]))
    obj["kind"] = "teleport"
    with pytest.raises(ProtocolError, match="invalid"):
        decode(json.dumps(obj).encode())


def test_wrong_schema_version_is_rejected() -> None:
    obj = json.loads(encode(SAMPLES[0]))
    obj["schema_version"] = 2
    with pytest.raises(ProtocolError, match="schema_version"):
        decode(json.dumps(obj).encode())


@pytest.mark.parametrize(
    ("field", "value"),
    [("soc", "0.5"), ("soc", 1.5), ("locked", "yes"), ("rated_tops", -1), ("sent_at", "2026-11-29T08:00:00"),
     ("gear", "X"), ("sender", "CAR/1"), ("sender", "car+1"), ("pack_temp_c", None),
     ("rated_tops", 1e308), ("tops_in_use", 1e300), ("earned", 1e300)],
)
def test_wrong_types_and_ranges_are_rejected(field: str, value: object) -> None:
    obj = json.loads(encode(telemetry()))
    obj[field] = value
    with pytest.raises(ProtocolError):
        decode(json.dumps(obj).encode())


def test_oversized_payload_is_rejected_before_parsing() -> None:
    with pytest.raises(ProtocolError) as info:
        decode(b" " * (MAX_PAYLOAD_BYTES + 1))
    assert info.value.reason == "oversized"


@pytest.mark.parametrize("field", ["sent_at", "sim_time"])
def test_naive_datetime_is_rejected_but_iso_with_zone_is_accepted(field: str) -> None:
    obj = json.loads(encode(telemetry()))
    obj[field] = "2026-11-29T09:00:00"
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps(obj).encode())
    assert info.value.reason == "invalid" and field in info.value.detail
    obj[field] = "2026-11-29T09:00:00+09:00"
    assert getattr(decode(json.dumps(obj).encode()), field).utcoffset() == timedelta(hours=9)


def test_models_are_frozen() -> None:
    msg = telemetry()
    with pytest.raises(ValidationError, match="frozen_instance"):
        msg.soc = 0.1  # type: ignore[misc]
    assert msg.soc == telemetry().soc


@given(st.binary(max_size=2048))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_escape_as_anything_but_protocol_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except ProtocolError as exc:
        assert exc.reason in {"invalid", "oversized"}
    else:
        assert decode(encode(msg)) == msg


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(sorted(telemetry().model_dump().keys())), json_values, max_size=6))
@settings(max_examples=200, deadline=None)
def test_corrupted_fields_are_rejected_or_still_valid(patch: dict[str, object]) -> None:
    obj = json.loads(encode(telemetry()))
    obj.update(patch)
    try:
        msg = decode(json.dumps(obj).encode())
    except ProtocolError:
        return
    assert isinstance(msg, VehicleTelemetry)
    assert decode(encode(msg)) == msg


@given(
    soc=st.floats(0, 1), tops=st.floats(1e-3, 1e6), used=st.floats(0, 1e6),
    lat=st.floats(-90, 90), lon=st.floats(-180, 180), locked=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_telemetry_round_trips_for_any_valid_values(
    soc: float, tops: float, used: float, lat: float, lon: float, locked: bool
) -> None:
    base = telemetry().model_dump()
    base.update(soc=soc, rated_tops=tops, tops_in_use=used, locked=locked, location={"latitude": lat, "longitude": lon})
    msg = VehicleTelemetry.model_validate_json(json.dumps(base, default=str))
    assert decode(encode(msg)) == msg


# --- the topic and the payload must agree --------------------------------------------------

def test_decode_on_accepts_a_car_on_its_own_topic() -> None:
    topics = Topics("fr")
    msg = telemetry("car-1")
    info, decoded = decode_on(topics, topics.telemetry("car-1"), encode(msg))
    assert info.vehicle_id == "car-1" and decoded == msg


def test_a_topic_that_disagrees_with_the_sender_is_rejected() -> None:
    topics = Topics("fr")
    with pytest.raises(ProtocolError) as info:
        decode_on(topics, topics.telemetry("car-2"), encode(telemetry("car-1")))
    assert info.value.reason == "sender_mismatch"


def test_a_message_on_the_wrong_channel_is_rejected() -> None:
    topics = Topics("fr")
    with pytest.raises(ProtocolError) as info:
        decode_on(topics, topics.offer("car-1"), encode(telemetry("car-1")))
    assert info.value.reason == "wrong_channel"


def test_an_assignment_for_another_car_is_rejected() -> None:
    topics = Topics("fr")
    assignment = next(m for m in SAMPLES if isinstance(m, ShardAssignment))
    with pytest.raises(ProtocolError) as info:
        decode_on(topics, topics.commands("car-other"), encode(assignment))
    assert info.value.reason == "topic_mismatch"


def test_unknown_topic_is_rejected() -> None:
    topics = Topics("fr")
    with pytest.raises(ProtocolError) as info:
        decode_on(topics, "fr/v1/vehicles/car-1/secret", encode(telemetry("car-1")))
    assert info.value.reason == "unknown_topic"
