"""Retained messages reach only their subscribers and are kept only where the ACL allows; amqtt cannot hang."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt

from broker.embedded import BrokerSettings, EmbeddedBroker
from mqttlink import BrokerUrl, make_client, new_client_id
from protocol.identity import client_id_for
from protocol.topics import Topics
from tests.support.brokers import TestBroker
from tests.support.outsiders import mosquitto_pub
from tests.support.waiting import wait_until


async def test_a_new_client_gets_no_retained_messages_for_other_clients_filters(secure_broker: TestBroker) -> None:
    t = secure_broker.topics
    async with make_client(secure_broker.url("dispatcher"), client_id_for("dispatcher")) as dispatcher:
        await dispatcher.subscribe(t.everything, qos=1)  # a wide filter held by someone else
        await dispatcher.publish(t.summary, b"retained summary", qos=1, retain=True)
        await dispatcher.publish(t.job_state("job-1"), b"retained job", qos=1, retain=True)
        await dispatcher.publish(t.commands("car-aa"), b"not retained", qos=1)
        got: list[str] = []
        async with make_client(secure_broker.url("car-aa"), client_id_for("car-aa")) as car:
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


async def _reads_on_after_one_cancel() -> None:
    """A reader as Python 3.11's wait_for leaves it when a packet lands with the cancellation."""
    with contextlib.suppress(asyncio.CancelledError):  # swallowed: the read "succeeded"
        await asyncio.Event().wait()
    await asyncio.Event().wait()  # ... and the loop reads on


async def test_stopping_a_connection_whose_reader_swallowed_the_cancel_does_not_hang(topics: Topics) -> None:
    """Fix 3: amqtt cancels a connection's reader once and waits for it; the broker must not hang."""
    async with EmbeddedBroker(BrokerSettings(port=0, allow_anonymous=True, topic_prefix=topics.prefix)) as embedded:
        amqtt = embedded._broker  # the amqtt Broker inside: the fix is in its private machinery
        assert amqtt is not None
        with contextlib.suppress(aiomqtt.MqttError):
            async with make_client(BrokerUrl("127.0.0.1", embedded.port, None, None), "car-x"):
                await wait_until(lambda: "car-x" in amqtt._sessions, what="the car's session")
                _, handler = amqtt._sessions["car-x"]
                real_reader = handler._reader_task
                handler._reader_task = stubborn = asyncio.create_task(_reads_on_after_one_cancel())
                await asyncio.sleep(0)  # the stand-in is now waiting
                async with asyncio.timeout(10):
                    await amqtt._stop_handler(handler)
                assert stubborn.done()
                assert real_reader is not None
                await wait_until(real_reader.done, what="the real reader to see its connection closed")


async def test_only_the_acls_retain_topics_keep_a_retained_message(secure_broker: TestBroker) -> None:
    """Fix 8: publishing is not retaining; a car cannot make the broker keep its telemetry or subtopics."""
    t, port = secure_broker.topics, secure_broker.port

    def login(user: str) -> list[str]:
        return ["-u", user, "-P", secure_broker.url(user).password or "", "-i", client_id_for(user), "-r"]

    attempts = [  # (user, topic, kept?)
        ("car-aa", t.vehicle_status("car-aa"), True),
        ("car-aa", t.telemetry("car-aa"), False),
        ("car-aa", t.offer("car-aa"), False),
        ("car-aa", f"{t.vehicle_status('car-aa')}/sub-1", False),
        ("gw-0", t.vehicle_status("car-bb"), True),
        ("gw-0", t.telemetry("car-bb"), False),
        ("dispatcher", t.summary, True),
        ("dispatcher", t.commands("car-aa"), False),
    ]
    for user, topic, _ in attempts:
        await mosquitto_pub(port, *login(user), "-t", topic, "-m", f"retained by {user}")
    kept = {topic for _, topic, keep in attempts if keep}
    got: list[str] = []
    async with make_client(secure_broker.url("observer"), client_id_for("observer")) as late:
        await late.subscribe(t.everything, qos=1)

        async def read() -> None:
            async for message in late.messages:
                got.append(str(message.topic))

        task = asyncio.create_task(read())
        await wait_until(lambda: kept <= set(got), what="the retained messages the ACL allows")
        await mosquitto_pub(port, *login("car-aa")[:-1], "-t", t.telemetry("car-aa"), "-m", "live")
        await wait_until(lambda: t.telemetry("car-aa") in got, what="a live message after the retained ones")
        task.cancel()
    assert sorted(got) == sorted([*kept, t.telemetry("car-aa")])
