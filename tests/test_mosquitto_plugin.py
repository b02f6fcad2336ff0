"""The fleetroom Mosquitto plugin, tried with Mosquitto's own clients: same rights as `FleetAcl`, nothing more.

Each table row is checked twice: against the Python rules (`FleetAcl`, `role_of`,
`owns_client_id`, `check_password`) and against a real mosquitto running the plugin, driven
by `mosquitto_pub` / `mosquitto_sub` (clients this project did not write).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.acl import FleetAcl
from broker.mosquitto_config import PluginBuildError, build_plugin, rules_file
from mqttlink import make_client
from protocol.identity import check_password, client_id_for, derive_password, owns_client_id, role_of
from protocol.topics import Topics
from tests.support.brokers import MosquittoProcess, TestBroker, mosquitto_broker, require_mosquitto
from tests.support.mosquitto_clients import login_args, mosquitto_pub, mosquitto_sub
from tests.support.waiting import wait_until

pytestmark = pytest.mark.mosquitto
SECRET = b"plugin-test-secret"

# (user, action, topic or filter with {r} for the topic root, allowed)
RIGHTS: list[tuple[str, str, str, bool]] = [
    ("car-aa", "publish", "{r}/vehicles/car-aa/telemetry", True),
    ("car-aa", "publish", "{r}/vehicles/car-aa/shards", True),
    ("car-aa", "publish", "{r}/vehicles/car-bb/telemetry", False),
    ("car-aa", "publish", "{r}/vehicles/car-aa/foo/bar", False),
    ("car-aa", "publish", "{r}/vehicles/car-aa/foo", False),
    ("car-aa", "publish", "{r}/commands/car-aa", False),
    ("car-aa", "publish", "{r}/jobs/submit", False),
    ("car-aa", "publish", "{r}/connections/car-aa/status", False),
    ("car-aa", "retain", "{r}/vehicles/car-aa/status", True),
    ("car-aa", "retain", "{r}/vehicles/car-aa/telemetry", False),
    ("car-aa", "retain", "{r}/vehicles/car-aa/offer", False),
    ("car-aa", "subscribe", "{r}/commands/car-aa", True),
    ("car-aa", "subscribe", "{r}/commands/car-bb", False),
    ("car-aa", "subscribe", "{r}/commands/+", False),
    ("car-aa", "subscribe", "{r}/#", False),
    ("car-aa", "subscribe", "#", False),
    ("observer", "publish", "{r}/vehicles/car-aa/shards", False),
    ("observer", "publish", "{r}/vehicles/observer/offer", False),
    ("observer", "publish", "{r}/vehicles/observer/shards", False),
    ("observer", "publish", "{r}/jobs/submit", False),
    ("observer", "subscribe", "{r}/#", True),
    ("observer", "subscribe", "#", False),
    ("observer", "subscribe", "$SYS/#", False),
    ("operator", "publish", "{r}/vehicles/car-aa/shards", False),
    ("operator", "publish", "{r}/vehicles/operator/offer", False),
    ("operator", "publish", "{r}/jobs/submit", True),
    ("operator", "publish", "{r}/commands/car-aa", False),
    ("operator", "retain", "{r}/jobs/submit", False),
    ("operator", "retain", "{r}/connections/operator/status", True),
    ("dispatcher", "publish", "{r}/vehicles/car-aa/shards", False),
    ("dispatcher", "publish", "{r}/vehicles/dispatcher/offer", False),
    ("dispatcher", "publish", "{r}/commands/car-aa", True),
    ("dispatcher", "retain", "{r}/dispatcher/summary", True),
    ("dispatcher", "retain", "{r}/commands/car-aa", False),
    ("gw-0", "publish", "{r}/vehicles/car-aa/telemetry", True),
    ("gw-0", "publish", "{r}/vehicles/car-aa/foo/bar", False),
    ("gw-0", "retain", "{r}/vehicles/car-bb/status", True),
    ("gw-0", "retain", "{r}/vehicles/car-aa/telemetry", False),
    ("gw-0", "publish", "{r}/commands/car-aa", False),
    ("gw-0", "publish", "{r}/connections/gw-1/status", False),
    ("gw-0", "subscribe", "{r}/commands/+", True),
    # gateway frames: a gateway writes only its own, retained only its rosters (cars' meaning is the receivers' check)
    ("gw-0", "retain", "{r}/gateways/gw-0/roster/3", True),
    ("gw-0", "publish", "{r}/gateways/gw-0/offers", True),
    ("gw-0", "retain", "{r}/gateways/gw-0/offers", False),
    ("gw-0", "publish", "{r}/gateways/gw-1/offers", False),
    ("gw-0", "retain", "{r}/gateways/gw-1/roster/3", False),
    ("gw-0", "publish", "{r}/gateways/gw-0/roster/3/x", False),
    ("car-aa", "publish", "{r}/gateways/car-aa/offers", False),
    ("car-aa", "retain", "{r}/gateways/gw-0/roster/0", False),
    ("observer", "subscribe", "{r}/gateways/+/roster/+", True),
    ("gw-0", "subscribe", "{r}/commands/#", False),
    ("gw-0", "subscribe", "{r}/#", False),
]

# (user, client id, whose password, accepted)
LOGINS: list[tuple[str, str, str, bool]] = [
    ("car-aa", "car-aa", "car-aa", True),
    ("car-aa", "car-aa:7f3a", "car-aa", True),
    ("car-aa", "car-bb:7f3a", "car-aa", False),
    ("car-aa", "car-aab", "car-aa", False),
    ("car-aa", "car-aa-2", "car-aa", False),
    ("car-aa", "x:car-aa", "car-aa", False),
    ("car-aa", "car-aa:1", "car-bb", False),
    ("car-aa", "car-aa:1", "wrong", False),
    ("observer", "observer:1", "observer", True),
    ("observer", "car-aa", "observer", False),
    ("operator", "dispatcher:1", "operator", False),
    ("dispatcher", "dispatcher:1", "dispatcher", True),
    ("gw-0", "gw-0:1", "gw-0", True),
    ("gw-0", "gw-1:1", "gw-0", False),
    ("Car-AA", "Car-AA:1", "Car-AA", False),
    ("car aa", "car aa:1", "car aa", False),
    ("car-aa ", "car-aa :1", "car-aa ", False),
    ("-car", "-car:1", "-car", False),
    ("car/aa", "car/aa:1", "car/aa", False),
    ("car+", "car+:1", "car+", False),
    ("c" * 64, "c" * 64, "c" * 64, True),
    ("c" * 65, "c" * 65, "c" * 65, False),
]


def python_allows(topics: Topics, user: str, action: str, topic: str) -> bool:
    """What the amqtt plugins decide, through `FleetAcl`."""
    acl = FleetAcl(topics)
    if action == "subscribe":
        return acl.may_read(user, topic)
    return acl.may_publish(user, topic, retain=action == "retain")


def python_accepts(user: str, client_id: str, password_of: str) -> bool:
    """What the amqtt plugins decide about a login."""
    password = derive_password(SECRET, password_of) if password_of != "wrong" else "wrong"
    return role_of(user) is not None and owns_client_id(user, client_id) and check_password(SECRET, user, password)


async def subscription_granted(broker: TestBroker, user: str, topic_filter: str) -> bool:
    """True if the broker grants `user` a subscription to `topic_filter` (SUBACK not 0x80)."""
    argv = ["mosquitto_sub", *login_args(broker, user), "-d", "-E", "-q", "1", "-t", topic_filter]
    proc = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=20)
    granted = [line for line in proc.stdout.splitlines() if line.startswith("Subscribed (mid:")]
    assert granted, proc.stdout + proc.stderr
    return granted[0].rsplit(":", 1)[1].strip() != "128"


@pytest.fixture
async def mq(topics: Topics, tmp_path: Path) -> AsyncIterator[TestBroker]:
    """A mosquitto process secured by the fleetroom plugin."""
    require_mosquitto()  # and its clients, which these tests run
    async with mosquitto_broker(topics, tmp_path / "mosquitto", SECRET) as broker:
        yield broker


@pytest.mark.parametrize(("user", "action", "topic", "allowed"), RIGHTS)
def test_the_table_is_what_fleet_acl_says(user: str, action: str, topic: str, allowed: bool) -> None:
    assert python_allows(Topics("fleet"), user, action, topic.format(r="fleet/v1")) is allowed


async def test_mosquitto_grants_exactly_the_table(mq: TestBroker) -> None:
    r = mq.topics.root
    wrong: list[str] = []
    async with mosquitto_sub(mq, "observer", f"{r}/#") as witness:
        for i, (user, action, template, allowed) in enumerate(RIGHTS):
            topic = template.format(r=r)
            if action == "subscribe":
                if await subscription_granted(mq, user, topic) is not allowed:
                    wrong.append(f"{user} {action} {topic}: expected {allowed}")
                continue
            flags = ["-r"] if action == "retain" else []
            assert await mosquitto_pub(mq, user, "-t", topic, "-m", f"row-{i}", *flags) == 0
        assert await mosquitto_pub(mq, "dispatcher", "-t", f"{r}/commands/end", "-m", "end") == 0
        await wait_until(lambda: witness.got(f"{r}/commands/end", "end"), what="the last message")
        for i, (user, action, template, allowed) in enumerate(RIGHTS):
            if action != "subscribe" and witness.got(template.format(r=r), f"row-{i}") is not allowed:
                wrong.append(f"{user} {action} {template.format(r=r)}: expected {allowed}")
    assert not wrong, "\n".join(wrong)


def random_filter(rng: random.Random, t: Topics) -> str:
    """A valid MQTT filter made from a real fleet topic: levels swapped for wildcards or others, cut, extended."""
    topics = [t.commands("car-aa"), t.commands("car-bb"), t.telemetry("car-aa"), t.vehicle_status("car-bb"),
              t.connection_status("gw-0"), t.fleet_control, t.summary, t.job_state("j1"), "$SYS/broker/uptime"]
    levels = rng.choice(topics).split("/")
    levels = [rng.choice(["+", "x", "car-aa", ""]) if rng.random() < 0.2 else level for level in levels]
    if rng.random() < 0.3:
        levels = levels[: rng.randint(1, len(levels))]
    if rng.random() < 0.2:
        levels.append(rng.choice(["x", "+"]))
    if rng.random() < 0.25:
        levels.append("#")
    return "/".join(levels) or "+"


@pytest.mark.parametrize("user", ["car-aa", "gw-0", "observer"])
async def test_random_subscriptions_are_granted_exactly_as_fleet_acl_says(mq: TestBroker, user: str) -> None:
    """The plugin's filter matching is `filter_covers`, wildcards on either side included."""
    rng = random.Random(f"{user}-10")
    filters = sorted({random_filter(rng, mq.topics) for _ in range(400)})
    async with make_client(mq.url(user), client_id_for(user)) as client:
        codes = await client.subscribe([(f, 1) for f in filters])
    acl = FleetAcl(mq.topics)
    wrong = [f"{f}: broker {code.value != 128}" for f, code in zip(filters, codes, strict=True)
             if (code.value != 128) is not acl.may_read(user, f)]
    assert any(acl.may_read(user, f) for f in filters) and not all(acl.may_read(user, f) for f in filters)
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("user", "client_id", "password_of", "accepted"), LOGINS)
def test_the_login_table_is_what_the_identity_rules_say(user: str, client_id: str, password_of: str,
                                                        accepted: bool) -> None:
    assert python_accepts(user, client_id, password_of) is accepted


async def test_mosquitto_accepts_exactly_the_login_table(mq: TestBroker) -> None:
    wrong = []
    for user, client_id, password_of, accepted in LOGINS:
        password = derive_password(SECRET, password_of) if password_of != "wrong" else "wrong"
        rc = await mosquitto_pub(mq, user, "-t", f"{mq.topics.root}/x", "-m", "x", client_id=client_id,
                                 password=password)
        if (rc == 0) is not accepted:
            wrong.append(f"{user!r} as {client_id!r} with {password_of!r}'s password: exit {rc}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("intruder", ["observer", "operator", "dispatcher", "gw-0", "car-bb"])
@pytest.mark.parametrize("car_client_id", ["car-aa", "car-aa:4b1d"])
async def test_no_other_login_takes_over_a_cars_client_id(mq: TestBroker, intruder: str, car_client_id: str) -> None:
    t = mq.topics
    async with mosquitto_sub(mq, "car-aa", t.commands("car-aa"), client_id=car_client_id) as car:
        assert await mosquitto_pub(mq, intruder, "-t", f"{t.root}/x", "-m", "x", client_id=car_client_id) != 0
        assert await mosquitto_pub(mq, "dispatcher", "-t", t.commands("car-aa"), "-m", "still-here") == 0
        await wait_until(lambda: car.got(t.commands("car-aa"), "still-here"), what="the car's next command")
        assert car.proc.returncode is None
        assert sum("received CONNACK (0)" in line for line in car.lines) == 1, car.lines  # never kicked off


def raw_connect(port: int, client_id: bytes, username: bytes, password: bytes) -> bytes:
    """Send one MQTT 3.1.1 CONNECT on a socket; the CONNACK's 4 bytes, or b'' if the broker hung up."""
    def field(value: bytes) -> bytes:
        return struct.pack("!H", len(value)) + value

    body = field(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30)
    body += field(client_id) + field(username) + field(password)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        try:
            return sock.recv(4)
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize("name", [b"car-x\n", b"car-x\r", b"car\x01x", b"car-x\x7f", b"car-x\x00"])
async def test_user_names_with_control_characters_are_refused(mq: TestBroker, name: bytes) -> None:
    password = derive_password(SECRET, name.decode()).encode()
    answer = await asyncio.to_thread(raw_connect, mq.port, b"car-x", name, password)
    assert answer != b"\x20\x02\x00\x00", "logged in"
    ok = await asyncio.to_thread(raw_connect, mq.port, b"car-x", b"car-x", derive_password(SECRET, "car-x").encode())
    assert ok == b"\x20\x02\x00\x00"


async def test_a_last_will_is_published_only_where_its_user_may_publish_it(mq: TestBroker) -> None:
    t = mq.topics
    wills = {  # client id -> (will topic, retained, may be published)
        "car-aa:w1": (t.vehicle_status("car-aa"), True, True),
        "car-aa:w2": (t.vehicle_status("car-bb"), True, False),
        "car-aa:w3": (t.telemetry("car-aa"), True, False),
        "car-aa:w4": (t.commands("car-bb"), False, False),
    }
    async with mosquitto_sub(mq, "observer", f"{t.root}/#") as witness:
        for cid, (topic, retained, _) in wills.items():
            extra = ["--will-topic", topic, "--will-payload", cid, "--will-qos", "1"]
            async with mosquitto_sub(mq, "car-aa", t.commands("car-aa"), client_id=cid,
                                     extra=[*extra, *(["--will-retain"] if retained else [])]):
                pass  # killed, not disconnected: its Will is due
        for cid in wills:  # a fresh login under each id settles the old connection (and its Will) first
            assert await mosquitto_pub(mq, "car-aa", "-t", t.telemetry("car-aa"), "-m", "x", client_id=cid) == 0
        assert await mosquitto_pub(mq, "dispatcher", "-t", t.commands("end"), "-m", "end") == 0
        await wait_until(lambda: witness.got(t.commands("end"), "end"), what="the last message")
    assert {cid: witness.got(topic, cid) for cid, (topic, _, _) in wills.items()} == {
        cid: allowed for cid, (_, _, allowed) in wills.items()
    }


async def test_a_message_larger_than_256_kib_is_not_delivered(mq: TestBroker) -> None:
    t = mq.topics
    async with mosquitto_sub(mq, "observer", f"{t.root}/#") as witness:
        await mosquitto_pub(mq, "car-aa", "-t", t.telemetry("car-aa"), "-s", stdin=b"b" * 300_000)
        assert await mosquitto_pub(mq, "car-aa", "-t", t.telemetry("car-aa"), "-s", stdin=b"s" * 200_000) == 0
        await wait_until(lambda: any(line.endswith("s" * 100) for line in witness.lines), what="the 200 kB message")
    assert not any(line.endswith("b" * 100) for line in witness.lines)


@pytest.mark.parametrize(("file", "content", "logged"), [
    ("secret", "  \n", "plugin_opt_secret_file"),
    ("rules", "publish vehicle\n", "line 1 is not understood"),
    ("rules", "user_name [a-z]+\nfrobnicate all\n", "line 2 is not understood"),
    ("rules", "# nothing\n", "needs user_name, client_id_separator and default"),
])
async def test_mosquitto_refuses_to_start_with_a_bad_secret_or_rules_file(
    topics: Topics, tmp_path: Path, file: str, content: str, logged: str
) -> None:
    async with mosquitto_broker(topics, tmp_path / "mq", SECRET) as broker:
        port = broker.port
    (tmp_path / "mq" / file).write_text(content)
    with pytest.raises(RuntimeError, match="mosquitto exited at once"):
        await MosquittoProcess(tmp_path / "mq", port).start()
    assert logged in (tmp_path / "mq" / "mosquitto.log").read_text()


def test_the_rules_file_lists_each_roles_filters() -> None:
    text = rules_file(Topics("fleet"))
    assert "publish vehicle fleet/v1/vehicles/%u/telemetry\n" in text
    assert "retain vehicle fleet/v1/vehicles/%u/status\n" in text
    assert "read observer fleet/v1/#\n" in text
    assert "fixed observer observer\n" in text and "prefix gw- gateway\n" in text
    assert not any(line.startswith(("publish observer", "retain observer")) for line in text.splitlines())


def test_a_build_without_the_headers_names_the_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "plugin.c"
    source.write_text("#include <mosquitto_broker_absent.h>\n")
    monkeypatch.setattr("broker.mosquitto_config.PLUGIN_SOURCE", source)
    with pytest.raises(PluginBuildError) as err:
        build_plugin(tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and "mosquitto_broker_absent.h is missing" in message
    assert "mosquitto-dev libmosquitto-dev libssl-dev" in message
    assert list((tmp_path / "out").iterdir()) == []
