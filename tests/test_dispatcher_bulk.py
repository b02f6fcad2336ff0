"""The dispatcher's shell on the bulk reader: a flood it cannot keep up with waits, shows as backlog, is all handled.

A real dispatcher (SQLite ledger, `DispatcherService`) on both brokers; the flood comes from
`mosquitto_pub -l`, the states from a client we did not write.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from dispatcher.engine import Engine
from dispatcher.service import ServiceSettings
from dispatcher.views import Out
from protocol.codec import encode
from protocol.fleet_messages import FleetSummary
from protocol.vehicle_messages import HardwareGeneration, Liveness, VehicleStatus
from tests.support.brokers import TestBroker, require_mosquitto
from tests.support.mosquitto_clients import mosquitto_pub
from tests.support.samples import env, telemetry
from tests.support.scripted_cars import dispatcher_running
from tests.support.waiting import wait_until

FLOOD = 3000
MAX_BUFFERED = 100
HANDLE_S = 0.0005  # the engine's cost of one message, made large enough for the flood to outrun it


@pytest.fixture(autouse=True)
def _clients_the_project_did_not_write() -> None:
    require_mosquitto()


def service_running(broker: TestBroker, db: Path, summaries: list[FleetSummary]) -> AbstractAsyncContextManager[Engine]:
    """A dispatcher whose reader holds at most `MAX_BUFFERED` unread messages before it pauses."""
    settings = ServiceSettings(tick_s=0.05, summary_interval_s=0.05, max_buffered=MAX_BUFFERED)
    return dispatcher_running(broker, db, settings=settings, on_summary=summaries.append)


async def test_a_flood_the_engine_cannot_keep_up_with_waits_and_is_all_handled(
    any_broker: TestBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics, summaries = any_broker.topics, []
    status = VehicleStatus(**env("car-flood"), state=Liveness.ONLINE, hardware=HardwareGeneration.HW5)
    statuses = (encode(status) + b"\n") * FLOOD
    async with service_running(any_broker, tmp_path / "l.sqlite", summaries) as engine:
        handle, flood_topic, handled = engine.handle, topics.vehicle_status("car-flood"), []

        def slow_handle(topic: str, payload: bytes) -> list[Out]:
            if topic == flood_topic:
                time.sleep(HANDLE_S)  # CPU the engine spends, not a wait for a condition
                handled.append(payload)
            return handle(topic, payload)

        monkeypatch.setattr(engine, "handle", slow_handle)
        assert await mosquitto_pub(any_broker, "pub", "-t", flood_topic, "-l", stdin=statuses) == 0
        await wait_until(lambda: len(handled) >= FLOOD, 60, "every message of the flood")
        assert not engine.rejections()  # nothing refused, nothing lost for want of room
    backlogs = [s.ingest_backlog for s in summaries]
    assert len(handled) == FLOOD
    assert max(backlogs) > 0  # the summary shows what waits to be handled (the pause itself: test_bulk_link)


async def test_the_dispatcher_reads_states_not_per_car_telemetry(
    any_broker: TestBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue: the dispatcher needs states, offers and results; a million cars' telemetry is the control room's."""
    topics, summaries = any_broker.topics, []
    async with service_running(any_broker, tmp_path / "l.sqlite", summaries) as engine:
        handle, seen = engine.handle, []

        def recording_handle(topic: str, payload: bytes) -> list[Out]:
            seen.append(topic)
            return handle(topic, payload)

        monkeypatch.setattr(engine, "handle", recording_handle)
        sample = encode(telemetry("car-seen"))
        status = encode(VehicleStatus(**env("car-seen"), state=Liveness.ONLINE, hardware=HardwareGeneration.HW5))
        assert await mosquitto_pub(any_broker, "pub", "-t", topics.telemetry("car-seen"), "-m", sample.decode()) == 0
        assert await mosquitto_pub(any_broker, "pub", "-t", topics.vehicle_status("car-seen"), "-m",
                                   status.decode()) == 0
        await wait_until(lambda: topics.vehicle_status("car-seen") in seen, what="the car's status")
    assert topics.telemetry("car-seen") not in seen
