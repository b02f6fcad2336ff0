"""The operator link: each command on its topic with its channel's delivery, and the dispatcher rule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import get_args

import pytest

from mqttlink import (
    NoDispatcher,
    OperatorCommand,
    OperatorLink,
    cancel_and_wait,
    make_client,
    new_client_id,
    new_job_id,
)
from mqttlink.operator import CHANNEL_OF
from protocol import (
    AddCars,
    CancelJob,
    DriveAway,
    JobSubmission,
    MatchPolicy,
    SetPolicy,
    Topics,
    decode_on,
    utc_now,
)
from protocol.topics import DELIVERY, Channel
from tests.support.brokers import TestBroker
from tests.support.waiting import wait_until

SIM_TIME = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


class Recorder:
    """A publish callable that keeps what it was asked to publish."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []

    async def __call__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.sent.append((topic, payload, qos, retain))


def job(sender: str = "operator") -> JobSubmission:
    now = utc_now()
    return JobSubmission(sender=sender, sent_at=now, sim_time=now, job_id=new_job_id(), name="batch",
                         total_work_tera_ops=1000.0, shards=2, min_tops_per_car=100.0, max_parallel_shards=2)


async def send_all(link: OperatorLink) -> None:
    """One of each operator command."""
    await link.submit(job())
    await link.cancel_job("job-1", reason="test")
    await link.set_policy(MatchPolicy.CHEAPEST)
    await link.drive_away("car-a")
    await link.add_cars(10, hardware_mix={"HW5": 1.0})


def test_every_operator_command_has_one_channel() -> None:
    assert set(CHANNEL_OF) == set(get_args(OperatorCommand))
    assert set(CHANNEL_OF.values()) == {Channel.JOB_SUBMIT, Channel.DISPATCHER_CONTROL, Channel.FLEET_CONTROL}


async def test_commands_go_on_their_topic_with_their_channels_delivery(topics: Topics) -> None:
    recorder = Recorder()
    link = OperatorLink(recorder, topics, sender="operator", sim_time=lambda: SIM_TIME, dispatcher_online=lambda: True)
    await send_all(link)
    kinds = []
    for topic, payload, qos, retain in recorder.sent:
        info, message = decode_on(topics, topic, payload)  # the topic is the one the codec expects
        assert (qos, retain) == (DELIVERY[info.channel].qos, DELIVERY[info.channel].retain)
        assert message.sender == "operator"
        kinds.append(message.kind)
        if not isinstance(message, JobSubmission):
            assert message.sim_time == SIM_TIME
    assert kinds == ["job_submit", "cancel_job", "set_policy", "drive_away", "add_cars"]


async def test_commands_for_the_dispatcher_are_refused_while_none_is_online(topics: Topics) -> None:
    recorder = Recorder()
    link = OperatorLink(recorder, topics, sender="operator", dispatcher_online=lambda: False)
    for command in (link.submit(job()), link.cancel_job("job-1"), link.set_policy(MatchPolicy.FASTEST)):
        with pytest.raises(NoDispatcher, match="no dispatcher is online"):
            await command
    assert recorder.sent == []
    await link.drive_away("car-a")  # the fleet's commands do not wait for a dispatcher
    await link.add_cars(1)
    assert [topic for topic, *_ in recorder.sent] == [topics.fleet_control] * 2


async def test_a_sender_that_resends_may_submit_without_a_dispatcher(topics: Topics) -> None:
    recorder = Recorder()
    link = OperatorLink(recorder, topics, sender="operator", dispatcher_online=None)
    await link.submit(job())
    assert [topic for topic, *_ in recorder.sent] == [topics.job_submit]


async def test_commands_over_a_real_client_reach_a_subscriber(amqtt_broker: TestBroker, topics: Topics) -> None:
    received: list[tuple[OperatorCommand, int]] = []
    async with make_client(amqtt_broker.url(), new_client_id("listen")) as listener, \
            make_client(amqtt_broker.url(), new_client_id("operator")) as client:
        await listener.subscribe(topics.everything, qos=1)

        async def collect() -> None:
            async for message in listener.messages:
                assert isinstance(message.payload, bytes)
                _, command = decode_on(topics, str(message.topic), message.payload)
                assert isinstance(command, JobSubmission | CancelJob | SetPolicy | DriveAway | AddCars)
                received.append((command, message.qos))

        reader = asyncio.create_task(collect())
        try:
            await send_all(OperatorLink(client, topics, sender="operator", dispatcher_online=lambda: True))
            await wait_until(lambda: len(received) == 5, what="the five commands")
        finally:
            await cancel_and_wait(reader)
    assert [(command.kind, qos) for command, qos in received] == [
        ("job_submit", 1), ("cancel_job", 1), ("set_policy", 1), ("drive_away", 1), ("add_cars", 1)]
