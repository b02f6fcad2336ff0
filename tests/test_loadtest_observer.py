"""The observer on a real broker: it times live messages, counts bad ones, and survives a restart."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

from fleetroom.compose.jobstream import JobStream
from fleetroom.loadtest.ledger import RunLedger
from fleetroom.loadtest.observer import Observer
from mqttlink import cancel_and_wait, make_client
from protocol import Liveness, VehicleStatus, encode, utc_now
from tests.support.brokers import TestBroker
from tests.support.samples import telemetry
from tests.support.waiting import wait_until


def status(car: str) -> bytes:
    return encode(VehicleStatus(sender=car, sent_at=utc_now(), sim_time=utc_now(), state=Liveness.ONLINE))


async def test_observer_times_messages_and_counts_bad_ones(amqtt_broker: TestBroker) -> None:
    topics = amqtt_broker.topics
    ledger = RunLedger()
    observer = Observer(amqtt_broker.url(), topics, ledger, time.monotonic())
    task = asyncio.create_task(observer.run())
    try:
        await asyncio.wait_for(observer.connected.wait(), 10)
        async with make_client(amqtt_broker.url(), "t-pub") as client:
            for i in range(20):
                await client.publish(topics.vehicle_status(f"car-{i:02d}"), status(f"car-{i:02d}"), qos=1)
            await client.publish(topics.vehicle_status("car-xx"), b"{not json", qos=1)
            await client.publish(topics.vehicle_status("car-yy"), status("car-zz"), qos=1)  # sender mismatch
            will = VehicleStatus(sender="car-00", sent_at=utc_now() - timedelta(hours=1), sim_time=utc_now(),
                                 state=Liveness.OFFLINE)  # a Last Will, stamped when the car connected
            await client.publish(topics.vehicle_status("car-00"), encode(will), qos=1)
        await wait_until(lambda: ledger.counters.receives >= 23, 10, "23 messages at the observer")
        await wait_until(lambda: ledger.probe_latency.stats().count >= 1, 10, "the observer's probe to itself")
    finally:
        await cancel_and_wait(task)
    assert ledger.counters.connects == 20 and ledger.counters.rejected == 2 and ledger.counters.failures == 1
    stats = ledger.latency.stats()
    assert stats.count == 20 and 0 < stats.max_ms < 5000


async def test_jobs_queued_during_a_broker_restart_are_sent_after_it(amqtt_broker: TestBroker) -> None:
    topics = amqtt_broker.topics
    ledger = RunLedger()
    observer = Observer(amqtt_broker.url(), topics, ledger, time.monotonic())
    stream = JobStream(random.Random(1), {"inference": 1.0}, sender="loadtest", prefix="tj")
    task = asyncio.create_task(observer.run())
    try:
        await asyncio.wait_for(observer.connected.wait(), 10)
        observer.submit(stream.next(utc_now(), datetime.now(UTC)))
        await wait_until(lambda: len(ledger.submitted) == 1, 10, "the first job acknowledged")
        await amqtt_broker.stop()
        await wait_until(lambda: not observer.connected.is_set(), 10, "the observer to notice")
        observer.submit(stream.next(utc_now(), datetime.now(UTC)))
        await amqtt_broker.start()
        await wait_until(lambda: len(ledger.submitted) == 2, 30, "the queued job sent after the restart")
        # the observer subscribes to the whole root before it sends, so it sees its own job arrive
        await wait_until(lambda: ledger.counters.by_kind.get("job_submit", 0) == 2, 10, "both jobs on the wire")
    finally:
        await cancel_and_wait(task)
    assert ledger.counters.observer_reconnects >= 1
    assert list(ledger.submitted) == ["tj-00001", "tj-00002"]


async def test_telemetry_of_only_the_sampled_cars_is_taken(amqtt_broker: TestBroker) -> None:
    topics = amqtt_broker.topics
    ledger = RunLedger()
    observer = Observer(amqtt_broker.url(), topics, ledger, time.monotonic(), telemetry_sample=2)
    task = asyncio.create_task(observer.run())
    cars = [f"car-{i:02d}" for i in range(5)]
    try:
        await asyncio.wait_for(observer.connected.wait(), 10)
        async with make_client(amqtt_broker.url(), "t-pub") as client:
            for car in cars:
                await client.publish(topics.vehicle_status(car), status(car), qos=1)
            await wait_until(lambda: ledger.counters.connects == 5, 10, "five cars online")
            await wait_until(lambda: not observer._new_samples, 10, "the sampled cars' subscriptions")
            for car in cars:
                await client.publish(topics.telemetry(car), encode(telemetry(car)), qos=1)
            await client.publish(topics.job_submit, b"{}", qos=1)  # a marker after the telemetry
        await wait_until(lambda: ledger.counters.rejected == 1, 10, "the marker")
    finally:
        await cancel_and_wait(task)
    assert ledger.counters.by_kind.get("telemetry") == 2
