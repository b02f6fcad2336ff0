"""`--telemetry-format fleet-telemetry`: a real `mosquitto_sub` reads Tesla's open MQTT layout from the fleet.

The fleet runs as a real process on both secured brokers (amqtt with the fleet plugins, Mosquitto
with the fleetroom plugin); a `mosquitto_sub` (a client this project did not write) logged in as
the observer checks every topic's field name against the published list and every value
against the JSON Schema `fleetroom schema` writes.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from broker.acl import FleetAcl
from fake_vehicles.car import AGE_YEARS, TYPICAL_ANNUAL_KM, Car
from fake_vehicles.catalogue import DEFAULT_HARDWARE_MIX
from fake_vehicles.fleet_telemetry import FleetTelemetryEncoder, field_values
from protocol import VehicleTelemetry, decode
from protocol.base import HardwareGeneration
from protocol.fleet_telemetry import FIELDS, UPSTREAM_FIELD_NAMES, default_base, parse_topic
from protocol.frames import decode_frame
from protocol.schema import asyncapi_document, fleet_telemetry_schemas
from protocol.topics import Channel, Topics
from tests.support.brokers import TestBroker
from tests.support.demo_loadtest import child
from tests.support.mosquitto_clients import Subscriber, mosquitto_pub, mosquitto_sub
from tests.support.waiting import wait_until

SIM_START = "2026-11-30T10:00:00-08:00"  # a Monday morning: commuters have parked at work
VIN = re.compile(r"[A-HJ-NPR-Z0-9]{17}")  # ISO 3779 characters: what a pseudonym must never look like
CARS = 4


@asynccontextmanager
async def fleet_process(broker: TestBroker, tmp_path: Path, *args: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "fleetroom", "vehicles", "--broker", f"mqtt://127.0.0.1:{broker.port}",
            "--topic-prefix", broker.topics.prefix, "--sim-start", SIM_START, "--count", str(CARS), "--seed", "7",
            "--speed", "60", "--telemetry-interval", "30", *args]
    if broker.secret is not None:
        (tmp_path / "secret").write_bytes(broker.secret)
        argv += ["--secret-file", str(tmp_path / "secret")]
    async with child(argv, tmp_path, tmp_path / "fleet.log") as proc:
        yield proc


def written_schemas(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The fleet-telemetry record schemas, as `fleetroom schema --out` writes them."""
    out = tmp_path / "schema"
    subprocess.run([sys.executable, "-m", "fleetroom", "schema", "--out", str(out)], check=True, capture_output=True)
    return {p.name.removesuffix(".schema.json"): json.loads(p.read_text())
            for p in (out / "fleet-telemetry").glob("*.schema.json")}


def records_by_car(sub: Subscriber, base: str) -> dict[str, dict[str, list[Any]]]:
    """vehicle id -> field name (or `connectivity`) -> the decoded values received, in order."""
    out: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for topic, payload in sub.under(base):
        vid, field = parse_topic(base, topic)
        out[vid][field or "connectivity"].append(json.loads(payload))
    return out


def disconnected_cars(sub: Subscriber, base: str) -> set[str]:
    """The cars whose DISCONNECTED event the subscriber has received."""
    return {vid for vid, fields in records_by_car(sub, base).items()
            if any(e["Status"] == "DISCONNECTED" for e in fields["connectivity"])}


def every_field_of_every_car(sub: Subscriber, base: str) -> bool:
    cars = records_by_car(sub, base)
    return len(cars) == CARS and all(set(FIELDS) | {"connectivity"} <= set(fields) for fields in cars.values())


@pytest.mark.parametrize("mode", ["per-car", "gateway"])
async def test_a_real_subscriber_reads_every_car_in_the_fleet_telemetry_layout(
    secure_broker: TestBroker, tmp_path: Path, mode: str
) -> None:
    topics = secure_broker.topics
    base = default_base(topics)
    schemas = written_schemas(tmp_path)
    assert set(schemas) == set(FIELDS) | {"connectivity"}
    async with mosquitto_sub(secure_broker, "observer", f"{base}/#", f"{topics.root}/vehicles/+/status",
                             topics.all_rosters) as sub:
        async with fleet_process(secure_broker, tmp_path, "--mode", mode, "--telemetry-format", "fleet-telemetry") \
                as proc:
            await wait_until(lambda: every_field_of_every_car(sub, base), 40, "every field of every car")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0, (tmp_path / "fleet.log").read_text()[-2000:]
        # amqtt sometimes loses the tail of a gateway's goodbye, whatever the format (the last car's offline
        # status too, with the default format); Mosquitto delivers every message
        goodbyes = CARS if secure_broker.kind == "mosquitto" or mode == "per-car" else 1
        await wait_until(lambda: len(disconnected_cars(sub, base)) >= goodbyes, 10, "DISCONNECTED events")
    statuses = {t.split("/")[-2] for t, _ in sub.under(f"{topics.root}/vehicles")}  # per-car mode
    statuses |= {car.vehicle_id for _, p in sub.under(f"{topics.root}/gateways")  # gateway mode: in rosters
                 for car in getattr(decode_frame(Channel.ROSTER, p.encode()), "cars", [])}
    cars = records_by_car(sub, base)
    assert set(cars) == statuses  # the <VIN> level is the car's own id ...
    for vid, fields in cars.items():
        assert not VIN.fullmatch(vid.upper()), vid  # ... a pseudonym, never VIN-like
        for field, values in fields.items():
            assert field == "connectivity" or field in UPSTREAM_FIELD_NAMES, field
            for value in values:
                jsonschema.validate(value, schemas[field])
                assert value is not None, f"{vid} {field}: the emulator has no invalid readings"
        events = fields["connectivity"]
        expected = ["CONNECTED", "DISCONNECTED"] if vid in disconnected_cars(sub, base) else ["CONNECTED"]
        assert [e["Status"] for e in events] == expected, events
        assert len({e["ConnectionId"] for e in events}) == 1
        assert fields["Odometer"][0] > 0  # cars do not start at 0 miles any more
        assert fields["Gear"][0] in ("ShiftStateP", "ShiftStateD")


async def test_the_default_format_is_unchanged_and_sends_no_fleet_telemetry(secure_broker: TestBroker,
                                                                            tmp_path: Path) -> None:
    topics = secure_broker.topics
    base = default_base(topics)
    telemetry = f"{topics.root}/vehicles/+/telemetry"
    async with mosquitto_sub(secure_broker, "observer", f"{base}/#", telemetry) as sub, \
            fleet_process(secure_broker, tmp_path, "--mode", "per-car"):
        # each car's records would follow its telemetry on the same connection: two reports each prove none came
        await wait_until(lambda: len(sub.under(f"{topics.root}/vehicles")) >= 2 * CARS, 40, "two reports per car")
    assert sub.under(base) == []
    reports = [decode(payload.encode()) for _, payload in sub.under(f"{topics.root}/vehicles")]
    assert all(isinstance(r, VehicleTelemetry) for r in reports)
    assert all(r.odometer_km > 0 for r in reports if isinstance(r, VehicleTelemetry))


# (user, action, topic with {b} for the fleet-telemetry base, allowed)
RIGHTS: list[tuple[str, str, str, bool]] = [
    ("car-aa", "publish", "{b}/car-aa/v/Soc", True),
    ("car-aa", "publish", "{b}/car-aa/connectivity", True),
    ("car-aa", "publish", "{b}/car-bb/v/Soc", False),
    ("car-aa", "publish", "{b}/car-bb/connectivity", False),
    ("car-aa", "publish", "{b}/car-aa/v/Soc/x", False),
    ("car-aa", "publish", "{b}/car-aa/alerts/x/current", False),
    ("car-aa", "retain", "{b}/car-aa/v/Soc", False),
    ("car-aa", "retain", "{b}/car-aa/connectivity", False),
    ("gw-0", "publish", "{b}/car-bb/v/Odometer", True),
    ("gw-0", "publish", "{b}/car-bb/connectivity", True),
    ("gw-0", "retain", "{b}/car-bb/connectivity", False),
    ("observer", "publish", "{b}/car-aa/v/Soc", False),
    ("operator", "publish", "{b}/car-aa/v/Soc", False),
    ("dispatcher", "publish", "{b}/car-aa/v/Soc", False),
]


@pytest.mark.parametrize(("user", "action", "topic", "allowed"), RIGHTS)
def test_fleet_acl_lets_a_car_write_only_its_own_fleet_telemetry(user: str, action: str, topic: str,
                                                                 allowed: bool) -> None:
    topics = Topics("fleet")
    acl = FleetAcl(topics)
    assert acl.may_publish(user, topic.format(b=default_base(topics)), retain=action == "retain") is allowed


def test_readers_may_read_the_base_and_cars_may_not() -> None:
    topics = Topics("fleet")
    acl, base = FleetAcl(topics), default_base(topics)
    assert all(acl.may_read(user, f"{base}/#") for user in ("observer", "operator", "dispatcher"))
    assert not acl.may_read("car-aa", f"{base}/#")
    assert not acl.may_read("car-aa", f"{base}/car-bb/v/+")


async def test_both_secured_brokers_grant_exactly_the_table(secure_broker: TestBroker) -> None:
    base = default_base(secure_broker.topics)
    async with mosquitto_sub(secure_broker, "observer", f"{base}/#") as witness:
        for i, (user, action, template, _) in enumerate(RIGHTS):
            flags = ["-r"] if action == "retain" else []
            await mosquitto_pub(secure_broker, user, "-t", template.format(b=base), "-m", f"{i}", *flags)
        assert await mosquitto_pub(secure_broker, "gw-0", "-t", f"{base}/end/connectivity", "-m", "end") == 0
        await wait_until(lambda: witness.got(f"{base}/end/connectivity", "end"), what="the last message")
    got = set(witness.messages())
    wrong = [f"{u} {a} {t}: expected {ok}" for i, (u, a, t, ok) in enumerate(RIGHTS)
             if ((t.format(b=base), str(i)) in got) is not ok]
    assert not wrong, "\n".join(wrong)


def test_every_field_value_of_many_cars_has_its_published_shape() -> None:
    schemas = fleet_telemetry_schemas()
    rng = random.Random(3)
    mix = [(share, gen) for gen, share in DEFAULT_HARDWARE_MIX.items()]
    for i in range(300):
        t = 1_764_000_000.0 + rng.uniform(0, 7 * 86400)
        car = Car.create(i, f"car-{i}", rng.getrandbits(63), mix, 0.0, t, rng)
        values = field_values(car)
        assert set(values) == set(FIELDS)
        for name, raw in values.items():
            jsonschema.validate(json.loads(raw), schemas[name])


def test_initial_odometers_are_plausible_and_follow_the_seed() -> None:
    mix = [(1.0, HardwareGeneration.HW3)]
    first = [Car.create(i, f"car-{i}", 1000 + i, mix, 0.0, 0.0, random.Random()).odometer_km for i in range(200)]
    again = [Car.create(i, f"car-{i}", 1000 + i, mix, 0.0, 0.0, random.Random()).odometer_km for i in range(200)]
    assert first == again
    low, high = AGE_YEARS[HardwareGeneration.HW3]
    assert all(low * TYPICAL_ANNUAL_KM * 0.5 <= km <= high * TYPICAL_ANNUAL_KM * 1.5 for km in first)
    assert 40_000 < sorted(first)[100] < 140_000  # median: about 4.5 years of about 21,700 km


def test_each_connection_gets_one_connected_and_one_disconnected_event() -> None:
    from datetime import UTC, datetime

    encoder = FleetTelemetryEncoder("fleet/fleet-telemetry", seed=1)
    at = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
    first = encoder.connected("car-aa", at)
    assert first is not None and encoder.connected("car-aa", at) is None  # a repeated status is no new connection
    gone = encoder.disconnected("car-aa", at)
    assert gone is not None and encoder.disconnected("car-aa", at) is None
    again = encoder.connected("car-aa", at)
    assert again is not None
    ids = [json.loads(record[1])["ConnectionId"] for record in (first, gone, again)]
    assert ids[0] == ids[1] != ids[2]
    expected = {"ConnectionId": ids[0], "Status": "DISCONNECTED", "CreatedAt": "2026-11-30T18:00:00Z"}
    assert json.loads(gone[1]) == expected


def test_asyncapi_describes_the_fleet_telemetry_topics() -> None:
    doc = asyncapi_document(Topics("fleet"), default_base(Topics("fleet")))
    assert "fleet/fleet-telemetry/{vehicleId}/v/{field}" in doc["channels"]
    connectivity = doc["channels"]["fleet/fleet-telemetry/{vehicleId}/connectivity"]
    assert connectivity["subscribe"]["bindings"]["mqtt"]["retain"] is False
    assert {f"ft_{name}" for name in FIELDS} <= set(doc["components"]["schemas"])


@pytest.mark.parametrize("args", [
    ["--telemetry-base", "telemetry"],
    ["--telemetry-format", "fleet-telemetry", "--telemetry-base", "Tele metry"],
    ["--telemetry-format", "tesla"],
])
def test_bad_telemetry_flags_are_one_line_and_exit_2(args: Sequence[str], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fleetroom", "vehicles", "--count", "1", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr  # argparse prints usage and one line


@pytest.mark.parametrize(("prefix", "base"), [
    ("fleetroom", "fleetroom/v1"), ("fleetroom", "fleetroom/v1/telemetry"), ("tft", "tft/v1/fleet-telemetry"),
])
def test_a_telemetry_base_under_the_versioned_root_is_refused(prefix: str, base: str, tmp_path: Path) -> None:
    """The dispatcher rejects every record there as not in the topic map, so the flag is refused up front."""
    proc = subprocess.run([sys.executable, "-m", "fleetroom", "vehicles", "--count", "1", "--topic-prefix", prefix,
                           "--telemetry-format", "fleet-telemetry", "--telemetry-base", base,
                           "--broker", "mqtt://127.0.0.1:1"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"under the versioned root {prefix}/v1" in lines[0], proc.stderr
