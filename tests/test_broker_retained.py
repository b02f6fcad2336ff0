"""Retained messages reach only those who subscribed to them (a fix to amqtt 0.12.1)."""

from __future__ import annotations

import asyncio

from mqttlink import make_client, new_client_id
from tests.support.brokers import TestBroker
from tests.support.waiting import wait_until


async def test_a_new_client_gets_no_retained_messages_for_other_clients_filters(secure_broker: TestBroker) -> None:
    t = secure_broker.topics
    async with make_client(secure_broker.url("dispatcher"), new_client_id("dispatcher")) as dispatcher:
        await dispatcher.subscribe(t.everything, qos=1)  # a wide filter held by someone else
        await dispatcher.publish(t.summary, b"retained summary", qos=1, retain=True)
        await dispatcher.publish(t.job_state("job-1"), b"retained job", qos=1, retain=True)
        await dispatcher.publish(t.commands("car-aa"), b"not retained", qos=1)
        got: list[str] = []
        async with make_client(secure_broker.url("car-aa"), new_client_id("car-aa")) as car:
            await car.subscribe(t.commands("car-aa"), qos=1)

            async def read() -> None:
                async for message in car.messages:
                    got.append(str(message.topic))

            task = asyncio.create_task(read())
            await dispatcher.publish(t.commands("car-aa"), b"live", qos=1)
            await wait_until(lambda: t.commands("car-aa") in got, what="the car's own live command")
            task.cancel()
    assert got == [t.commands("car-aa")]


async def test_a_retained_message_arrives_once_per_subscription(any_broker: TestBroker) -> None:
    t = any_broker.topics
    async with make_client(any_broker.url(), new_client_id("a")) as a:
        await a.subscribe(t.everything, qos=1)
        await a.publish(t.summary, b"retained", qos=1, retain=True)
        got: list[bytes] = []
        async with make_client(any_broker.url(), new_client_id("b")) as b:
            await b.subscribe(t.summary, qos=1)

            async def read() -> None:
                async for message in b.messages:
                    got.append(message.payload)  # type: ignore[arg-type]

            task = asyncio.create_task(read())
            await a.publish(t.summary, b"live", qos=1)
            await wait_until(lambda: b"live" in got, what="the live summary")
            task.cancel()
    assert got == [b"retained", b"live"]
