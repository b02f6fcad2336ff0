"""Sessions on both brokers: a refused CONNECT changes nothing and a client id belongs to its user.

The attacker is `mosquitto_pub` (a client this project did not write) or raw CONNECT packets;
the victims are the fleet's own aiomqtt clients: a car, a gateway, the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from broker.amqtt_fixes import DEFAULT_MAX_PACKET_BYTES, FleetBroker
from broker.embedded import BrokerSettings, EmbeddedBroker
from mqttlink import make_client
from protocol.base import MAX_PAYLOAD_BYTES
from protocol.identity import client_id_for, derive_password
from protocol.topics import Topics
from tests.conftest import SECRET
from tests.support.brokers import TestBroker, embedded_broker, mosquitto_broker
from tests.support.outsiders import RawClient, Will, connack_code, connect_packet, mosquitto_pub, publish_header
from tests.support.waiting import wait_until

VICTIM_WILL = b"victim-will"
FORGED = b"forged"
NOT_AUTHORIZED, IDENTIFIER_REJECTED, BAD_CREDENTIALS = 5, 2, 4


@dataclass(frozen=True)
class Target:
    """A running client an attacker would like to silence or impersonate."""

    user: str
    client_id: str
    listens_on: Callable[[Topics], str]
    sender: str  # who legitimately publishes to it
    sent_to: Callable[[Topics], str]
    will_topic: Callable[[Topics], str]


TARGETS = {
    "car": Target(
        "car-aa", "car-aa:1234", lambda t: t.commands("car-aa"), "dispatcher",
        lambda t: t.commands("car-aa"), lambda t: t.vehicle_status("car-aa"),
    ),
    "gateway": Target(
        "gw-0", "gw-0:5678", lambda t: t.all_commands, "dispatcher",
        lambda t: t.commands("car-bb"), lambda t: t.connection_status("gw-0"),
    ),
    "dispatcher": Target(
        "dispatcher", "dispatcher:9abc", lambda t: t.job_submit, "operator",
        lambda t: t.job_submit, lambda t: t.connection_status("dispatcher"),
    ),
}


@dataclass
class Victim:
    """A connected target and what it received."""

    target: Target
    client: aiomqtt.Client
    got: list[bytes] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    def kill_socket(self) -> None:
        """End the TCP connection without DISCONNECT, so the broker publishes the Will."""
        sock = self.client._client.socket()  # paho's socket inside aiomqtt
        assert sock is not None, "the victim is not connected"
        sock.shutdown(socket.SHUT_RDWR)


@contextlib.asynccontextmanager
async def victim(broker: TestBroker, target: Target) -> AsyncIterator[Victim]:
    """The target connected with its Last Will, subscribed to what it listens on."""
    t = broker.topics
    will = aiomqtt.Will(target.will_topic(t), VICTIM_WILL, qos=1)
    client = make_client(broker.url(target.user), target.client_id, will=will)
    with contextlib.suppress(aiomqtt.MqttError):  # leaving fails once its socket is killed
        async with client:
            await client.subscribe(target.listens_on(t), qos=1)
            v = Victim(target, client)

            async def read() -> None:
                try:
                    async for message in client.messages:
                        v.got.append(message.payload)  # type: ignore[arg-type]
                except aiomqtt.MqttError:
                    v.disconnected.set()

            task = asyncio.create_task(read())
            try:
                yield v
            finally:
                task.cancel()


@contextlib.asynccontextmanager
async def observer(broker: TestBroker) -> AsyncIterator[list[tuple[str, bytes]]]:
    """The read-only control room, recording everything under the topic root."""
    seen: list[tuple[str, bytes]] = []
    async with make_client(broker.url("observer"), client_id_for("observer")) as client:
        await client.subscribe(broker.topics.everything, qos=1)

        async def read() -> None:
            async for message in client.messages:
                seen.append((str(message.topic), message.payload))  # type: ignore[arg-type]

        task = asyncio.create_task(read())
        try:
            yield seen
        finally:
            task.cancel()


async def still_receives(broker: TestBroker, v: Victim, tag: bytes) -> None:
    """The victim's legitimate sender publishes `tag` to it; the victim must get it."""
    t, target = broker.topics, v.target
    async with make_client(broker.url(target.sender), client_id_for(target.sender)) as sender:
        await sender.publish(target.sent_to(t), tag, qos=1)
    await wait_until(lambda: tag in v.got, what=f"{tag!r} at the victim {target.client_id}")
    assert not v.disconnected.is_set()


async def its_will_is_unchanged(broker: TestBroker, v: Victim, seen: list[tuple[str, bytes]]) -> None:
    """Kill the victim's socket: its own Will, and only that, must arrive."""
    will_topic = v.target.will_topic(broker.topics)
    v.kill_socket()
    await wait_until(lambda: any(topic == will_topic for topic, _ in seen), what="the victim's Will")
    assert [p for topic, p in seen if topic == will_topic] == [VICTIM_WILL]


def amqtt_sessions(broker: TestBroker) -> dict[str, object] | None:
    """amqtt's session map (private), or None on mosquitto."""
    if broker._embedded is None:
        return None
    inner = broker._embedded._broker
    assert isinstance(inner, FleetBroker)
    return inner._sessions  # type: ignore[return-value]


def hijack_args(broker: TestBroker, target: Target, attack: str) -> list[str]:
    """mosquitto_pub arguments for one way of trying to take the target's client id."""
    t = broker.topics
    who, _, mode = attack.partition("/")
    args = ["-i", target.client_id, "-t", t.telemetry("car-bb"), "-m", "x"]
    if who == "wrong-password":
        args += ["-u", target.user, "-P", "wrong", "--will-topic", target.will_topic(t)]
    elif who == "other-user":  # a valid login, but not the id's owner
        args += ["-u", "car-bb", "-P", broker.url("car-bb").password or "", "--will-topic", t.vehicle_status("car-bb")]
    else:  # no credentials at all
        args += ["--will-topic", target.will_topic(t)]
    args += ["--will-payload", FORGED.decode(), "--will-qos", "1", "--will-retain"]
    return args + (["-c"] if mode == "persistent" else [])


ATTACKERS = ("wrong-password", "anonymous", "other-user")
HIJACKS = [
    *[("car", f"{who}/{mode}") for who in ATTACKERS for mode in ("clean", "persistent")],
    ("gateway", "wrong-password/clean"),
    ("gateway", "other-user/persistent"),
    ("dispatcher", "anonymous/persistent"),
    ("dispatcher", "other-user/clean"),
]


@pytest.mark.parametrize(("name", "attack"), HIJACKS)
async def test_a_refused_login_with_a_victims_client_id_changes_nothing(
    secure_broker: TestBroker, name: str, attack: str
) -> None:
    target = TARGETS[name]
    async with observer(secure_broker) as seen, victim(secure_broker, target) as v:
        await still_receives(secure_broker, v, b"before")
        sessions = amqtt_sessions(secure_broker)
        before = dict(sessions) if sessions is not None else None

        assert await mosquitto_pub(secure_broker.port, *hijack_args(secure_broker, target, attack)) != 0

        if sessions is not None and before is not None:  # no new session, the victim's is the same one
            assert set(sessions) <= set(before), "a refused login must leave no session behind"
            assert sessions[target.client_id] == before[target.client_id]
        await still_receives(secure_broker, v, b"after")
        await its_will_is_unchanged(secure_broker, v, seen)
    assert FORGED not in [payload for _, payload in seen]


@pytest.mark.parametrize("will", ["another-cars-status", "retained-telemetry"])
async def test_a_will_the_user_may_not_leave_is_checked_before_its_session_is_touched(
    secure_broker: TestBroker, will: str
) -> None:
    """The id's owner logs in again (persistent session) with a Will it may not publish."""
    t, target = secure_broker.topics, TARGETS["car"]
    will_topic = t.vehicle_status("car-bb") if will == "another-cars-status" else t.telemetry("car-aa")
    forged = Will(will_topic, FORGED, retain=True)
    url = secure_broker.url("car-aa")
    async with observer(secure_broker) as seen, victim(secure_broker, target) as v:
        code = await connack_code(
            secure_broker.port, connect_packet(target.client_id, "car-aa", url.password, clean=False, will=forged)
        )  # ... and the raw client drops its socket without DISCONNECT: its Will would fire now
        if code == 0:  # Mosquitto lets the owner take its id over and checks the Will when it fires
            assert secure_broker.kind == "mosquitto"
            await wait_until(v.disconnected.is_set, what="the owner's takeover")
            await everything_published_so_far_arrived(secure_broker, seen)
        else:  # amqtt refuses the login, and nothing changed
            assert code == NOT_AUTHORIZED
            await still_receives(secure_broker, v, b"after")
            await its_will_is_unchanged(secure_broker, v, seen)
    assert FORGED not in [payload for _, payload in seen]


async def everything_published_so_far_arrived(broker: TestBroker, seen: list[tuple[str, bytes]]) -> None:
    """A marker published now reaches the observer: what was published before it had its chance to."""
    marker = f"marker-{len(seen)}".encode()
    async with make_client(broker.url("dispatcher"), client_id_for("dispatcher")) as dispatcher:
        await dispatcher.publish(broker.topics.summary, marker, qos=1)
    await wait_until(lambda: (broker.topics.summary, marker) in seen, what="the marker")


async def test_the_same_user_reconnecting_takes_over_its_own_id(secure_broker: TestBroker) -> None:
    """MQTT-3.1.4-2: the old connection is closed (its Will fires, as on Mosquitto); the new one gets the id."""
    target = TARGETS["car"]
    will_topic = target.will_topic(secure_broker.topics)
    async with observer(secure_broker) as seen, victim(secure_broker, target) as old:
        await still_receives(secure_broker, old, b"before")
        async with victim(secure_broker, target) as new:
            await wait_until(old.disconnected.is_set, what="the old connection to be closed")
            await still_receives(secure_broker, new, b"after")
            await wait_until(lambda: (will_topic, VICTIM_WILL) in seen, what="the old connection's Will")
        assert b"after" not in old.got


async def test_refused_logins_leave_no_session_on_amqtt(topics: Topics) -> None:
    """Every refused CONNECT used to keep a session (about 30 KB) for its client id."""
    async with embedded_broker(topics, SECRET) as broker:
        sessions = amqtt_sessions(broker)
        assert sessions is not None
        before = len(sessions)
        packets = [connect_packet(f"car-aa:{i}", "car-aa", "wrong") for i in range(50)]
        packets += [connect_packet(f"intruder-{i}", clean=False) for i in range(50)]  # no credentials
        codes = await asyncio.gather(*(connack_code(broker.port, p) for p in packets))
        assert set(codes) <= {NOT_AUTHORIZED, BAD_CREDENTIALS}
        assert len(sessions) == before


async def test_a_user_name_with_a_trailing_newline_is_refused(secure_broker: TestBroker) -> None:
    """`car-x\\n` with the password derived for exactly that name: the name is matched whole."""
    assert secure_broker.secret is not None
    name = "car-x\n"
    password = derive_password(secure_broker.secret, name)
    code = await connack_code(secure_broker.port, connect_packet("car-x:1", name, password))
    assert code in (NOT_AUTHORIZED, BAD_CREDENTIALS, None)  # mosquitto closes at once: not valid MQTT UTF-8
    good = connect_packet("car-aa:1", "car-aa", secure_broker.url("car-aa").password)
    assert await connack_code(secure_broker.port, good) == 0


async def test_a_password_that_is_not_ascii_is_refused_and_the_broker_stays_up(secure_broker: TestBroker) -> None:
    """No credentials needed: the password check must say no, not raise (amqtt's handler would die)."""
    for password in ("é" * 24, "\u2603", "x" * 24 + "\u00ff"):
        code = await connack_code(secure_broker.port, connect_packet("car-aa:1", "car-aa", password))
        assert code in (NOT_AUTHORIZED, BAD_CREDENTIALS), code
    good = connect_packet("car-aa:2", "car-aa", secure_broker.url("car-aa").password)
    assert await connack_code(secure_broker.port, good) == 0


@pytest.fixture(params=["amqtt", pytest.param("mosquitto", marks=pytest.mark.slow)])
async def silent_socket_limit(
    request: pytest.FixtureRequest, topics: Topics, tmp_path: Path
) -> AsyncIterator[tuple[int, float]]:
    """A secured broker's port and how soon it must close a socket that sends no CONNECT.

    amqtt runs with a short `connect_timeout_s`; Mosquitto 2.0 has no such setting and closes
    a client that has not connected after 1.5 times its default keep-alive of 60 s.
    """
    if request.param == "amqtt":
        settings = BrokerSettings(port=0, secret=SECRET, topic_prefix=topics.prefix, connect_timeout_s=0.5)
        async with EmbeddedBroker(settings) as embedded:
            yield embedded.port, 5.0
    else:
        async with mosquitto_broker(topics, tmp_path / "mosquitto", SECRET) as broker:
            yield broker.port, 100.0


async def test_a_socket_that_never_completes_its_connect_is_closed(silent_socket_limit: tuple[int, float]) -> None:
    port, within_s = silent_socket_limit
    client = await RawClient.open(port)
    try:
        await client.send(bytes([0x10, 100]))  # a CONNECT announcing 100 bytes, and then nothing
        assert await client.closed_by_broker(within_s)
    finally:
        await client.close()


async def test_a_packet_over_the_size_cap_closes_its_connection(secure_broker: TestBroker) -> None:
    t, port = secure_broker.topics, secure_broker.port
    password = secure_broker.url("car-aa").password
    async with observer(secure_broker) as seen:
        announced = await _connected_raw_client(port, "car-aa:announced", password)
        await announced.send(publish_header(t.telemetry("car-aa"), 200 * 2**20) + bytes(1024))
        assert await announced.closed_by_broker(5.0), "closed on the header, before 200 MB arrive"
        await announced.close()

        whole = await _connected_raw_client(port, "car-aa:whole", password)
        payload = bytes(DEFAULT_MAX_PACKET_BYTES + 1024)
        with contextlib.suppress(ConnectionError):  # the broker may close while it is sent
            await whole.send(publish_header(t.telemetry("car-aa"), len(payload)) + payload)
        assert await whole.closed_by_broker(5.0)
        await whole.close()

        fits = bytes(MAX_PAYLOAD_BYTES)
        async with make_client(secure_broker.url("car-aa"), client_id_for("car-aa")) as car:
            await car.publish(t.telemetry("car-aa"), fits, qos=1)
        await wait_until(lambda: (t.telemetry("car-aa"), fits) in seen, what="a message within the cap")
    assert [len(p) for _, p in seen] == [len(fits)]


async def _connected_raw_client(port: int, client_id: str, password: str | None) -> RawClient:
    client = await RawClient.open(port)
    await client.send(connect_packet(client_id, "car-aa", password))
    assert await client.connack() == 0
    return client
