"""Publish/subscribe, retained status, Last Will and reconnection on amqtt and on mosquitto."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import aiomqtt

from mqttlink import LinkEvent, LinkState, make_client, new_client_id, stay_connected
from protocol import Liveness, Topics, VehicleStatus, decode, encode, utc_now
from tests.support.brokers import TestBroker
from tests.support.waiting import wait_until


def status(vid: str, state: Liveness) -> VehicleStatus:
    now = utc_now()
    return VehicleStatus(sender=vid, sent_at=now, sim_time=now, state=state)


async def collect(client: aiomqtt.Client, into: list[tuple[str, bytes]]) -> None:
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        into.append((str(message.topic), message.payload))


async def test_publish_subscribe(any_broker: TestBroker) -> None:
    topics = any_broker.topics
    got: list[tuple[str, bytes]] = []
    async with make_client(any_broker.url(), new_client_id("sub")) as sub, make_client(
        any_broker.url(), new_client_id("pub")
    ) as pub:
        await sub.subscribe(topics.all_vehicles(), qos=1)
        reader = asyncio.create_task(collect(sub, got))
        sent = status("car-1", Liveness.ONLINE)
        await pub.publish(topics.vehicle_status("car-1"), encode(sent), qos=1)
        await wait_until(lambda: len(got) == 1, what="the published status")
        reader.cancel()
    assert got[0][0] == topics.vehicle_status("car-1")
    assert decode(got[0][1]) == sent


async def test_retained_status_reaches_a_late_subscriber(any_broker: TestBroker) -> None:
    topics = any_broker.topics
    async with make_client(any_broker.url(), new_client_id("pub")) as pub:
        await pub.publish(topics.vehicle_status("car-1"), encode(status("car-1", Liveness.ASLEEP)), qos=1, retain=True)
    got: list[tuple[str, bytes]] = []
    async with make_client(any_broker.url(), new_client_id("late")) as late:
        await late.subscribe(topics.all_vehicles(), qos=1)
        reader = asyncio.create_task(collect(late, got))
        await wait_until(lambda: len(got) >= 1, what="the retained status")
        reader.cancel()
    message = decode(got[0][1])
    assert isinstance(message, VehicleStatus) and message.state is Liveness.ASLEEP


def _client_that_dies(broker: TestBroker, topics: Topics) -> subprocess.Popen[str]:
    """A real client process with a Last Will, killed later with SIGKILL (no DISCONNECT sent)."""
    will = encode(status("car-9", Liveness.OFFLINE)).decode()
    online = encode(status("car-9", Liveness.ONLINE)).decode()
    script = textwrap.dedent(f"""
        import asyncio, aiomqtt, sys
        async def main():
            will = aiomqtt.Will({topics.vehicle_status("car-9")!r}, {will!r}.encode(), qos=1, retain=True)
            async with aiomqtt.Client("127.0.0.1", {broker.port}, identifier="car-9-proc", will=will,
                                      keepalive=5) as c:
                await c.publish({topics.vehicle_status("car-9")!r}, {online!r}.encode(), qos=1, retain=True)
                print("ready", flush=True)
                await asyncio.sleep(3600)
        asyncio.run(main())
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


async def test_last_will_on_a_dropped_connection(any_broker: TestBroker) -> None:
    topics = any_broker.topics
    proc = _client_that_dies(any_broker, topics)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)  # type: ignore[union-attr]
        assert line.strip() == "ready"
        states: list[Liveness] = []
        async with make_client(any_broker.url(), new_client_id("watch")) as watch:
            await watch.subscribe(topics.vehicle_status("car-9"), qos=1)

            async def read() -> None:
                async for message in watch.messages:
                    states.append(decode(message.payload).state)  # type: ignore[arg-type,union-attr]

            reader = asyncio.create_task(read())
            await wait_until(lambda: states == [Liveness.ONLINE], what="the retained online status")
            proc.kill()
            await wait_until(lambda: states[-1] is Liveness.OFFLINE, timeout=20, what="the Last Will")
            reader.cancel()
    finally:
        proc.kill()
        proc.wait()
    # the Will is retained: a late subscriber sees the car offline
    got: list[tuple[str, bytes]] = []
    async with make_client(any_broker.url(), new_client_id("late")) as late:
        await late.subscribe(topics.vehicle_status("car-9"), qos=1)
        reader = asyncio.create_task(collect(late, got))
        await wait_until(lambda: len(got) >= 1, what="the retained Will")
        reader.cancel()
    # amqtt 0.12.1 may hand a new subscriber the same retained message twice; all must say offline
    assert {decode(p).state for _, p in got} == {Liveness.OFFLINE}  # type: ignore[union-attr]


async def test_reconnect_after_the_broker_restarts(any_broker: TestBroker) -> None:
    topics = any_broker.topics
    events: list[LinkEvent] = []
    got: list[str] = []
    sessions = 0

    async def session(client: aiomqtt.Client) -> None:
        nonlocal sessions
        sessions += 1
        await client.subscribe(topics.all_vehicles(), qos=1)
        async for message in client.messages:
            got.append(str(message.topic))

    from mqttlink import Backoff

    link = asyncio.create_task(
        stay_connected(any_broker.url(), new_client_id("dash"), session, on_state=events.append,
                       backoff=Backoff(initial_s=0.05, max_s=0.5))
    )
    try:
        await wait_until(lambda: sessions == 1, what="the first session")
        await any_broker.restart()
        await wait_until(lambda: any(e.state is LinkState.RECONNECTING for e in events), what="reconnecting")
        await wait_until(lambda: sessions == 2, timeout=20, what="the second session")
        async with make_client(any_broker.url(), new_client_id("pub")) as pub:
            await pub.publish(topics.telemetry("car-1"), b"{}", qos=1)
        await wait_until(lambda: got == [topics.telemetry("car-1")], what="a message after the restart")
    finally:
        link.cancel()
    states = [e.state for e in events]
    assert states[:2] == [LinkState.CONNECTING, LinkState.CONNECTED]
    assert LinkState.RECONNECTING in states and states[-1] is LinkState.CONNECTED


async def test_a_reader_that_falls_behind_counts_what_it_dropped(any_broker: TestBroker) -> None:
    """aiomqtt drops what finds its incoming queue full; `on_drop` makes that loss visible."""
    topics = any_broker.topics
    dropped: list[None] = []
    async with make_client(any_broker.url(), new_client_id("slow"), max_queued_incoming=5,
                           on_drop=lambda: dropped.append(None)) as slow, \
            make_client(any_broker.url(), new_client_id("pub")) as pub:
        await slow.subscribe(topics.telemetry("car-1"), qos=1)
        for i in range(30):  # the reader reads nothing meanwhile
            await pub.publish(topics.telemetry("car-1"), f"{i}".encode(), qos=1)
        await wait_until(lambda: len(dropped) == 25, what="25 messages dropped")
        assert len(slow.messages) == 5
        kept = [(await anext(slow.messages)).payload for _ in range(5)]
        assert kept == [b"0", b"1", b"2", b"3", b"4"]  # the oldest are kept, the newest dropped
