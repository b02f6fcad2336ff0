"""The bulk reader (`mqttlink.BulkLink`) against both brokers, with Mosquitto's own clients on the other end.

The packet parser is also checked on its own: fed byte by byte and in one chunk it must see the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqttlink import (
    Backoff,
    BrokerUnreachable,
    BulkLink,
    BulkLinkError,
    LinkEvent,
    LinkState,
    Received,
    client_id_of,
    stay_connected_bulk,
)
from mqttlink.packets import (
    MalformedPacket,
    StreamParser,
    pubacks,
    publish_packet,
    subscribe_packet,
)
from protocol.topics import Topics
from tests.support.brokers import TestBroker, require_mosquitto
from tests.support.mosquitto_clients import mosquitto_pub
from tests.support.tls import KINDS, tls_broker
from tests.support.waiting import wait_until


@pytest.fixture(autouse=True)
def _clients_the_project_did_not_write() -> None:
    require_mosquitto()


@contextlib.asynccontextmanager
async def reading(broker: TestBroker, *filters: tuple[str, int], **options: int) -> AsyncIterator[
        tuple[BulkLink, list[Received]]]:
    """A connected BulkLink subscribed to `filters`, with a task appending every message it reads."""
    link = BulkLink(broker.url(), client_id_of(broker.url(), "bulk"), **options)
    await link.connect()
    got: list[Received] = []
    if filters:
        await link.subscribe(list(filters))

    async def read() -> None:
        async for batch in link.batches():
            got.extend(batch)

    task = asyncio.create_task(read())
    try:
        yield link, got
    finally:
        await link.close()
        await task


# the parser ----------------------------------------------------------------------------------------
def _stream() -> bytes:
    """Publishes at QoS 0 and 1 (one retained, one of 200 KiB), a SUBACK and a PINGRESP."""
    return b"".join([
        publish_packet("fleet/a", b"zero", 0, False),
        publish_packet("fleet/b", b"one", 1, True, packet_id=7),
        bytes((0x90, 3, 0, 1, 1)),  # SUBACK id 1, QoS 1 granted
        publish_packet("fleet/\u00e9", b"x" * 200 * 1024, 1, False, packet_id=65535),
        bytes((0xD0, 0)),  # PINGRESP
        publish_packet("fleet/c", b"", 0, False),
    ])


def _feed(chunks: list[bytes]) -> tuple[list[Received], list[int], list[tuple[int, bytes]]]:
    parser = StreamParser()
    messages, acks, others = [], [], []
    for chunk in chunks:
        parsed = parser.feed(chunk)
        messages += parsed.messages
        acks += parsed.acks
        others += [(p.kind, p.body) for p in parsed.others]
    assert parser.pending_bytes == 0
    return messages, acks, others


def test_the_parser_sees_the_same_packets_fed_byte_by_byte_or_in_one_chunk() -> None:
    stream = _stream()
    whole = _feed([stream])
    assert whole == _feed([stream[i:i + 1] for i in range(len(stream))])
    assert whole == _feed([stream[i:i + 1000] for i in range(0, len(stream), 1000)])
    messages, acks, others = whole
    assert [(m.topic, len(m.payload), m.retain) for m in messages] == [
        ("fleet/a", 4, False), ("fleet/b", 3, True), ("fleet/\u00e9", 200 * 1024, False), ("fleet/c", 0, False)]
    assert messages[0].payload == b"zero" and acks == [7, 65535]
    assert others == [(9, bytes((0, 1, 1))), (13, b"")]
    assert pubacks(acks) == bytes((0x40, 2, 0, 7, 0x40, 2, 0xFF, 0xFF))


@pytest.mark.parametrize(("stream", "needle"), [
    (bytes((0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01)), "longer than 4 bytes"),
    (bytes((0x30, 0x81, 0x80, 0x10)), "over the cap"),  # 262,273 bytes announced
    (bytes((0x34, 5, 0, 1, 116, 0, 1)), "QoS 2"),
    (bytes((0x30, 3, 0, 9, 116)), "shorter than its topic"),
    (bytes((0x30, 4, 0, 2, 0xFF, 0xFE)), "not UTF-8"),
])
def test_the_parser_refuses_broken_framing(stream: bytes, needle: str) -> None:
    with pytest.raises(MalformedPacket, match=needle):
        StreamParser().feed(stream)


def test_subscribe_packets_carry_every_filter_and_qos() -> None:
    assert subscribe_packet(3, [("a", 0), ("b/#", 1)]) == bytes((0x82, 12, 0, 3, 0, 1, 97, 0, 0, 3, 98, 47, 35, 1))


# both brokers ---------------------------------------------------------------------------------------
async def test_qos_0_and_1_messages_from_mosquitto_pub_with_their_retain_flag(any_broker: TestBroker) -> None:
    topics = any_broker.topics
    assert await mosquitto_pub(any_broker, "pub", "-t", topics.telemetry("kept"), "-m", "old", "-r") == 0
    async with reading(any_broker, (topics.all_vehicles(), 1)) as (_, got):
        await wait_until(lambda: len(got) == 1, what="the retained message")
        assert await mosquitto_pub(any_broker, "pub", "-t", topics.telemetry("car-0"), "-m", "q0", "-q", "0") == 0
        assert await mosquitto_pub(any_broker, "pub", "-t", topics.telemetry("car-1"), "-m", "q1") == 0
        await wait_until(lambda: len(got) == 3, what="both live messages")
    assert got == [Received(topics.telemetry("kept"), b"old", True), Received(topics.telemetry("car-0"), b"q0", False),
                   Received(topics.telemetry("car-1"), b"q1", False)]


async def test_unsubscribe_stops_delivery(any_broker: TestBroker) -> None:
    root = any_broker.topics.prefix
    async with reading(any_broker, (f"{root}/a/#", 1), (f"{root}/b/#", 1)) as (link, got):
        await link.unsubscribe([f"{root}/a/#"])
        assert await mosquitto_pub(any_broker, "pub", "-t", f"{root}/a/x", "-m", "gone") == 0
        assert await mosquitto_pub(any_broker, "pub", "-t", f"{root}/b/x", "-m", "kept") == 0
        await wait_until(lambda: len(got) >= 1, what="the message on the filter still subscribed")
    assert [m.payload for m in got] == [b"kept"]


async def test_a_200_kib_payload_arrives_whole(any_broker: TestBroker, tmp_path: Path) -> None:
    big = bytes(range(256)) * 800  # 200 KiB
    (tmp_path / "big").write_bytes(big)
    topic = any_broker.topics.telemetry("big")
    async with reading(any_broker, (topic, 1)) as (_, got):
        assert await mosquitto_pub(any_broker, "pub", "-t", topic, "-f", str(tmp_path / "big")) == 0
        await wait_until(lambda: len(got) == 1, what="the 200 KiB message")
    assert got[0].payload == big


async def test_20000_messages_arrive_in_order_and_none_is_lost(any_broker: TestBroker) -> None:
    topic = any_broker.topics.telemetry("many")
    lines = "".join(f"{i}\n" for i in range(20_000)).encode()
    async with reading(any_broker, (topic, 1)) as (_, got):
        assert await mosquitto_pub(any_broker, "pub", "-t", topic, "-l", stdin=lines) == 0
        await wait_until(lambda: len(got) >= 20_000, timeout=60, what="20,000 messages")
    assert [int(m.payload) for m in got] == list(range(20_000))


async def test_the_will_is_published_when_the_link_dies_and_not_when_it_closes(any_broker: TestBroker) -> None:
    status = any_broker.topics.connection_status("bulk")

    class Will:
        topic, payload, qos, retain = status, b"offline", 1, False

    async with reading(any_broker, (status, 1)) as (_, got):
        polite = BulkLink(any_broker.url(), client_id_of(any_broker.url(), "bulk"), will=Will())
        await polite.connect()
        await polite.close()
        crashed = BulkLink(any_broker.url(), client_id_of(any_broker.url(), "bulk"), will=Will())
        await crashed.connect()
        crashed.publish(status, b"online", qos=1)
        await wait_until(lambda: len(got) == 1, what="the link's own message")
        crashed.abort()
        await wait_until(lambda: len(got) == 2, what="the Will")
        with pytest.raises(BulkLinkError, match="lost"):
            async for _ in crashed.batches():
                pass
    assert [m.payload for m in got] == [b"online", b"offline"]


async def test_a_refused_login_is_one_line_naming_the_user(secure_broker: TestBroker) -> None:
    url = secure_broker.url("dispatcher").with_credentials("dispatcher", "wrong")
    with pytest.raises(BrokerUnreachable) as refused:
        await BulkLink(url, client_id_of(url, "dispatcher")).connect()
    text = str(refused.value)
    assert "'dispatcher'" in text and "\n" not in text and "login" in text


async def test_an_unreachable_broker_is_one_clear_line() -> None:
    from tests.support.brokers import free_port
    url = TestBroker("none", free_port(), Topics("x"), None).url()
    with pytest.raises(BrokerUnreachable, match=r"cannot reach the MQTT broker at .*connection refused"):
        await BulkLink(url, "probe").connect()


async def test_publishes_at_qos_1_are_tracked_until_acknowledged(any_broker: TestBroker) -> None:
    topic = any_broker.topics.telemetry("self")
    async with reading(any_broker, (topic, 1)) as (link, got):
        for i in range(100):
            link.publish(topic, str(i).encode(), qos=1)
        assert len(link.unacked) > 0
        await wait_until(lambda: len(got) == 100 and not link.unacked, what="100 messages acknowledged")
    assert [int(m.payload) for m in got] == list(range(100))


@pytest.mark.parametrize("kind", KINDS)
async def test_tls(kind: str, topics: Topics, tmp_path: Path) -> None:
    async with tls_broker(kind, topics, tmp_path) as broker:
        url = broker.url()
        async with BulkLink(url, client_id_of(url, "bulk")) as link:
            await link.subscribe([(topics.all_vehicles(), 1)])
            link.publish(topics.telemetry("car-1"), b"sealed", qos=1)
            async for batch in link.batches():
                assert batch == [Received(topics.telemetry("car-1"), b"sealed", False)]
                break
        wrong_ca = broker.url(ca=tmp_path / "other" / "ca.crt")
        from broker.tls import ensure_server_files
        ensure_server_files(tmp_path / "other")
        with pytest.raises(BrokerUnreachable, match="TLS"):
            await BulkLink(wrong_ca, "probe").connect()


async def test_keepalive_pings_keep_a_quiet_link_up(any_broker: TestBroker) -> None:
    topic = any_broker.topics.telemetry("quiet")
    async with reading(any_broker, (topic, 0), keepalive=1) as (link, got):
        await wait_until(lambda: link.pings_answered >= 4, what="four answered pings")  # 2 s: past 1.5 keepalives
        assert await mosquitto_pub(any_broker, "pub", "-t", topic, "-m", "still here") == 0
        await wait_until(lambda: len(got) == 1, what="a message after the pings")
        assert link.connected


async def test_a_broker_that_stops_answering_pings_is_a_lost_link() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(bytes((0x20, 2, 0, 0)))  # CONNACK accepted, then never another word
        await reader.read(1 << 16)
        await asyncio.Event().wait()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        link = BulkLink(TestBroker("none", port, Topics("x"), None).url(), "probe", keepalive=1)
        await link.connect()
        with pytest.raises(BulkLinkError, match="did not answer a ping"):
            async with asyncio.timeout(10):
                async for _ in link.batches():
                    pass
    finally:
        server.close()


async def test_stay_connected_bulk_reconnects_after_the_broker_restarts(any_broker: TestBroker) -> None:
    topics = any_broker.topics
    events: list[LinkEvent] = []
    got: list[str] = []
    sessions = 0

    async def session(link: BulkLink) -> None:
        nonlocal sessions
        await link.subscribe([(topics.all_vehicles(), 1)])
        sessions += 1
        async for batch in link.batches():
            got.extend(m.topic for m in batch)

    runner = asyncio.create_task(stay_connected_bulk(
        any_broker.url(), client_id_of(any_broker.url(), "bulk"), session, on_state=events.append,
        backoff=Backoff(initial_s=0.05, max_s=0.5)))
    try:
        await wait_until(lambda: sessions == 1, what="the first session")
        await any_broker.restart()
        await wait_until(lambda: sessions == 2, timeout=20, what="the second session")
        assert await mosquitto_pub(any_broker, "pub", "-t", topics.telemetry("car-1"), "-m", "{}") == 0
        await wait_until(lambda: got == [topics.telemetry("car-1")], what="a message after the restart")
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    states = [e.state for e in events]
    assert states[:2] == [LinkState.CONNECTING, LinkState.CONNECTED]
    assert LinkState.RECONNECTING in states and states[-1] is LinkState.CONNECTED


async def test_a_reader_that_falls_behind_pauses_the_socket_and_loses_nothing(any_broker: TestBroker) -> None:
    topic = any_broker.topics.telemetry("flood")
    total, payload = 4000, b"y" * 2000  # 8 MB: more than the socket buffers hold
    link = BulkLink(any_broker.url(), client_id_of(any_broker.url(), "bulk"), max_buffered=50)
    await link.connect()
    await link.subscribe([(topic, 1)])
    try:
        async with BulkLink(any_broker.url(), client_id_of(any_broker.url(), "pub")) as pub:
            for i in range(total):
                pub.publish(topic, b"%d:" % i + payload, qos=1)
            await wait_until(lambda: not pub.unacked, timeout=60, what="the broker to take every message")
        await wait_until(lambda: link.paused_count >= 1, what="the reader to pause")
        assert link.buffered < total // 4  # read no further than the bound and the chunk that crossed it
        got: list[Received] = []
        async for batch in link.batches():
            assert len(batch) < total // 4
            got += batch
            if len(got) >= total:
                break
    finally:
        await link.close()
    assert [int(m.payload.split(b":")[0]) for m in got] == list(range(total))


async def test_what_was_unacknowledged_when_the_link_died_is_there_to_send_again(any_broker: TestBroker) -> None:
    topic = any_broker.topics.telemetry("resend")
    link = BulkLink(any_broker.url(), client_id_of(any_broker.url(), "bulk"))
    await link.connect()
    for i in range(1000):
        link.publish(topic, str(i).encode(), qos=1)
    link.abort()  # before the broker could acknowledge them all
    left = link.unacked
    assert left and [int(o.payload) for o in left] == list(range(1000 - len(left), 1000))
    with pytest.raises(BulkLinkError):
        link.publish(topic, b"late", qos=1)


async def test_data_from_the_broker_is_a_sign_of_life_while_a_pingresp_waits_behind_it() -> None:
    """A broker busy sending a backlog (here: one that never answers pings but keeps publishing) is alive,
    and still hears a PINGREQ every half keepalive (it would time out a client that went quiet)."""
    sent, heard = 15, bytearray()

    async def listen(reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(1 << 16):
            heard.extend(chunk)

    async def busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(bytes((0x20, 2, 0, 0)))  # CONNACK accepted
        asyncio.get_running_loop().create_task(listen(reader))
        for n in range(sent):  # a QoS 0 PUBLISH on topic "t" every 0.2 s: 3 s, three keepalives
            payload = str(n).encode()
            writer.write(bytes((0x30, 3 + len(payload), 0, 1)) + b"t" + payload)
            await writer.drain()
            await asyncio.sleep(0.2)  # the pace of the fake broker's stream, not a wait for a condition
        await asyncio.Event().wait()

    server = await asyncio.start_server(busy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got: list[bytes] = []
    try:
        link = BulkLink(TestBroker("none", port, Topics("x"), None).url(), "probe", keepalive=1)
        await link.connect()
        async with asyncio.timeout(10):
            async for batch in link.batches():
                got += [message.payload for message in batch]
                if len(got) == sent:
                    break
        assert got == [str(n).encode() for n in range(sent)]
        assert link.pings_answered == 0
        assert heard.count(bytes((0xC0, 0))) >= 3  # a PINGREQ each half second of the three, none answered
        await link.close()
    finally:
        server.close()
