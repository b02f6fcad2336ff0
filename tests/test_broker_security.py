"""Fleet security on both brokers: the amqtt plugins and mosquitto with the generated files."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomqtt
import pytest

from mqttlink import BrokerUnreachable, BrokerUrl, check_broker, make_client, new_client_id
from protocol.identity import client_id_for
from tests.support.brokers import TestBroker
from tests.support.waiting import wait_until


def own_id(url: BrokerUrl) -> str:
    """A fresh client id that belongs to the URL's user (with fleet credentials nothing else is accepted)."""
    return client_id_for(url.username) if url.username else new_client_id("anonymous")


@asynccontextmanager
async def listener(url: BrokerUrl, *filters: str) -> AsyncIterator[list[str]]:
    """A connected client that records the topics of everything it receives on `filters`."""
    got: list[str] = []
    async with make_client(url, own_id(url)) as client:
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)

        async def read() -> None:
            async for message in client.messages:
                got.append(str(message.topic))

        task = asyncio.create_task(read())
        try:
            yield got
        finally:
            task.cancel()


async def publish(url: BrokerUrl, topic: str, payload: bytes = b"x") -> None:
    async with make_client(url, own_id(url)) as client:
        await client.publish(topic, payload, qos=1)


async def test_a_car_cannot_publish_as_another_car(secure_broker: TestBroker) -> None:
    t = secure_broker.topics
    async with listener(secure_broker.url("observer"), t.all_vehicles()) as seen:
        await publish(secure_broker.url("car-aa"), t.telemetry("car-bb"))  # forbidden
        await publish(secure_broker.url("car-aa"), t.telemetry("car-aa"))  # allowed, sent after
        await wait_until(lambda: t.telemetry("car-aa") in seen, what="the car's own telemetry")
    assert t.telemetry("car-bb") not in seen


async def test_a_car_cannot_read_another_cars_assignments(secure_broker: TestBroker) -> None:
    t = secure_broker.topics
    got: list[str] = []
    async with make_client(secure_broker.url("car-aa"), client_id_for("car-aa")) as car:
        # amqtt refuses these subscriptions; mosquitto accepts them and filters each message
        for topic_filter in (t.commands("car-bb"), t.all_commands, t.everything, t.commands("car-aa")):
            await car.subscribe(topic_filter, qos=1)

        async def read() -> None:
            async for message in car.messages:
                got.append(str(message.topic))

        task = asyncio.create_task(read())
        await publish(secure_broker.url("dispatcher"), t.commands("car-bb"))
        await publish(secure_broker.url("dispatcher"), t.commands("car-aa"))
        await wait_until(lambda: t.commands("car-aa") in got, what="the car's own assignment")
        task.cancel()
    assert t.commands("car-bb") not in got


async def test_a_car_cannot_assign_work(secure_broker: TestBroker) -> None:
    t = secure_broker.topics
    async with listener(secure_broker.url("car-bb"), t.commands("car-bb")) as seen:
        await publish(secure_broker.url("car-aa"), t.commands("car-bb"), b"forged")
        await publish(secure_broker.url("car-aa"), t.job_submit, b"forged")
        await publish(secure_broker.url("dispatcher"), t.commands("car-bb"), b"real")
        await wait_until(lambda: len(seen) >= 1, what="the dispatcher's assignment")
    assert seen == [t.commands("car-bb")]


async def test_the_observer_reads_everything_and_writes_nothing(secure_broker: TestBroker) -> None:
    t = secure_broker.topics
    async with listener(secure_broker.url("dispatcher"), t.everything) as seen:
        await publish(secure_broker.url("observer"), t.job_submit)
        await publish(secure_broker.url("observer"), t.commands("car-aa"))
        await publish(secure_broker.url("observer"), t.telemetry("car-aa"))
        await publish(secure_broker.url("car-aa"), t.telemetry("car-aa"))
        await wait_until(lambda: t.telemetry("car-aa") in seen, what="the car's telemetry")
    assert seen == [t.telemetry("car-aa")]


async def test_gateway_speaks_for_many_cars_but_cannot_assign(secure_broker: TestBroker) -> None:
    t = secure_broker.topics
    async with listener(secure_broker.url("observer"), t.everything) as seen:
        await publish(secure_broker.url("gw-0"), t.commands("car-aa"))  # forbidden
        await publish(secure_broker.url("gw-0"), t.telemetry("car-aa"))
        await publish(secure_broker.url("gw-0"), t.telemetry("car-bb"))
        await wait_until(lambda: len(seen) >= 2, what="telemetry via the gateway")
    assert sorted(seen) == sorted([t.telemetry("car-aa"), t.telemetry("car-bb")])


@pytest.mark.parametrize("who", ["bad-password", "anonymous", "unknown-role"])
async def test_logins_without_fleet_credentials_are_refused(secure_broker: TestBroker, who: str) -> None:
    good = secure_broker.url("car-aa")
    url = {
        "bad-password": BrokerUrl(good.host, good.port, "car-aa", "wrong"),
        "anonymous": BrokerUrl(good.host, good.port),
        "unknown-role": BrokerUrl(good.host, good.port, "Not A User!", "x"),
    }[who]
    with pytest.raises(BrokerUnreachable, match=r"refused the login|not authori|Not authori"):
        await check_broker(url, own_id(url))
    await check_broker(good, own_id(good))


async def test_cars_cannot_use_wildcards_to_publish(secure_broker: TestBroker) -> None:
    t = secure_broker.topics
    async with listener(secure_broker.url("observer"), t.everything) as seen:
        with pytest.raises((aiomqtt.MqttError, ValueError)):
            await publish(secure_broker.url("car-aa"), f"{t.root}/vehicles/+/telemetry")
        await publish(secure_broker.url("car-aa"), t.telemetry("car-aa"))
        await wait_until(lambda: len(seen) >= 1, what="the car's telemetry")
    assert seen == [t.telemetry("car-aa")]


async def test_a_car_cannot_leave_a_last_will_for_another_car(secure_broker: TestBroker) -> None:
    """amqtt refuses the login; mosquitto accepts it but drops the Will it may not publish."""
    t = secure_broker.topics
    url = secure_broker.url("car-aa")
    script = textwrap.dedent(f"""
        import asyncio, aiomqtt
        async def connect(ident, will_topic):
            will = aiomqtt.Will(will_topic, b"will", qos=1)
            client = aiomqtt.Client("127.0.0.1", {url.port}, username="car-aa", password={url.password!r},
                                    identifier=ident, will=will, keepalive=5)
            try:
                await client.__aenter__()
            except aiomqtt.MqttError:
                return None
            return client
        async def main():
            forged = await connect("car-aa:forger", {t.vehicle_status("car-bb")!r})
            honest = await connect("car-aa:honest", {t.vehicle_status("car-aa")!r})
            print("ready", forged is not None, honest is not None, flush=True)
            await asyncio.sleep(3600)
        asyncio.run(main())
    """)
    async with listener(secure_broker.url("observer"), t.everything) as seen:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)  # type: ignore[union-attr]
            assert line.split()[0] == "ready" and line.split()[2] == "True", line
            proc.kill()  # no DISCONNECT: both Wills fire, where they are allowed to
            await wait_until(lambda: t.vehicle_status("car-aa") in seen, timeout=20, what="the honest Will")
        finally:
            proc.kill()
            proc.wait()
    assert t.vehicle_status("car-bb") not in seen
