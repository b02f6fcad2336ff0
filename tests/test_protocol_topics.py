"""The topic map: builders and the parser agree, and nothing outside the map parses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import Channel, TopicError, Topics
from protocol.reference import equivalences, format_tops

ids = st.from_regex(r"^[a-z0-9][a-z0-9_.-]{0,20}$", fullmatch=True)


@given(vid=ids)
def test_vehicle_topics_parse_back(vid: str) -> None:
    topics = Topics("fleet")
    for channel in (Channel.VEHICLE_STATUS, Channel.TELEMETRY, Channel.OFFER, Channel.SHARDS):
        info = topics.parse(topics.vehicle(vid, channel))
        assert (info.channel, info.vehicle_id) == (channel, vid)
    assert topics.parse(topics.commands(vid)).vehicle_id == vid


def test_fixed_topics_parse_back() -> None:
    topics = Topics("a/b")
    assert topics.root == "a/b/v1"
    assert topics.parse(topics.job_submit).channel is Channel.JOB_SUBMIT
    assert topics.parse(topics.job_state("job-7")).job_id == "job-7"
    assert topics.parse(topics.summary).channel is Channel.SUMMARY
    assert topics.parse(topics.dispatcher_control).channel is Channel.DISPATCHER_CONTROL
    assert topics.parse(topics.fleet_control).channel is Channel.FLEET_CONTROL
    assert topics.parse(topics.connection_status("gw-1")).client_id == "gw-1"


@pytest.mark.parametrize("bad", ["car/1", "car+", "car#", "", "Car", "-car"])
def test_ids_that_would_break_topic_levels_are_refused(bad: str) -> None:
    with pytest.raises(TopicError):
        Topics("fleet").telemetry(bad)


@pytest.mark.parametrize(
    "topic",
    ["fleet/v2/vehicles/car-1/status", "other/v1/jobs/submit", "fleet/v1/vehicles/car-1", "fleet/v1/vehicles/+/status",
     "fleet/v1/jobs/submit/extra", "fleet/v1/commands/car-1/x"],
)
def test_topics_outside_the_map_do_not_parse(topic: str) -> None:
    with pytest.raises(TopicError):
        Topics("fleet").parse(topic)


def test_the_essay_arithmetic() -> None:
    hw5 = equivalences(1_000_000 * 5_000)
    assert hw5["Fugaku"] == 11_363 and hw5["El Capitan"] == 1_820
    hw6 = equivalences(1_000_000 * 20_000)
    assert hw6["El Capitan"] == 7_283 and 45_000 <= hw6["Fugaku"] < 46_000
    assert equivalences(880_000)["Fugaku"] == 2
    assert format_tops(5e9) == "5.0 GTOPS"
