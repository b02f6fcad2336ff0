"""The demo's job driver: it submits jobs only while a dispatcher is online to take them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fleetroom.common import DispatcherWatch
from fleetroom.compose.driver import drive, parse_args
from mqttlink import cancel_and_wait, make_client, new_client_id
from protocol import ConnectionStatus, JobSubmission, Liveness, decode, encode, utc_now
from tests.support.brokers import TestBroker
from tests.support.waiting import wait_until


def status(sender: str, state: Liveness, role: str = "dispatcher") -> bytes:
    now = utc_now()
    return encode(ConnectionStatus(sender=sender, sent_at=now, sim_time=now, role=role, state=state))  # type: ignore[arg-type]


def test_the_watch_follows_dispatcher_statuses_and_ignores_the_rest() -> None:
    watch = DispatcherWatch()
    assert not watch.online
    watch.seen(status("gw-1", Liveness.ONLINE, role="gateway"))
    watch.seen(b"{not json")
    assert not watch.online
    watch.seen(status("dispatcher", Liveness.ONLINE))
    watch.seen(status("dispatcher-b", Liveness.OFFLINE))
    assert watch.online
    watch.seen(status("dispatcher", Liveness.OFFLINE))  # its Last Will
    assert not watch.online


async def test_jobs_flow_only_once_a_dispatcher_is_online(
    amqtt_broker: TestBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleetroom.compose.driver")
    topics = amqtt_broker.topics
    jobs: list[JobSubmission] = []
    async with make_client(amqtt_broker.url(), new_client_id("test")) as client:
        dispatcher_topic = topics.connection_status("dispatcher")
        await client.publish(dispatcher_topic, status("dispatcher", Liveness.OFFLINE), qos=1, retain=True)
        await client.subscribe(topics.job_submit, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                job = decode(bytes(message.payload))  # type: ignore[arg-type]
                assert isinstance(job, JobSubmission)
                jobs.append(job)

        reader = asyncio.create_task(collect())
        args = parse_args(["--broker", str(amqtt_broker.url()), "--topic-prefix", topics.prefix,
                           "--sim-start", "2026-11-30T10:00:00+00:00", "--job-rate", "20"])
        driver = asyncio.create_task(drive(args))
        try:
            await wait_until(lambda: "holding the job stream" in caplog.text, what="the driver to hold its jobs")
            assert jobs == []
            opened = utc_now()
            await client.publish(dispatcher_topic, status("dispatcher", Liveness.ONLINE), qos=1, retain=True)
            await wait_until(lambda: len(jobs) >= 3, what="jobs once the dispatcher is online")
            assert all(job.sent_at >= opened for job in jobs), "a job was sent while no dispatcher was online"
        finally:
            await cancel_and_wait(driver, reader)
