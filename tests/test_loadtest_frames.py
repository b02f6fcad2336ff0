"""The load test's observer reads gateway frames: every state change in a roster counts, a car gone
from its block has left, an offer frame's items count as offers, a gap in its seq is a frame missed;
and the run measures the whole stack's memory from /proc."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import timedelta

from fleetroom.loadtest.ledger import RunLedger
from fleetroom.loadtest.memory import stack_rss_bytes
from fleetroom.loadtest.observer import Observer
from fleetroom.loadtest.slo import evaluate
from mqttlink import cancel_and_wait, make_client
from protocol import (
    CarRoster,
    Channel,
    ComputeOffer,
    HardwareGeneration,
    Liveness,
    OfferFrame,
    OfferWithdrawal,
    RosterEntry,
    TopicInfo,
    encode,
    utc_now,
)
from tests.support.brokers import TestBroker
from tests.support.waiting import wait_until

GW = "gw-1-0-1"


def roster(block: int, cars: dict[str, Liveness], gw: str = GW) -> CarRoster:
    now = utc_now()
    return CarRoster(sender=gw, sent_at=now, sim_time=now, block=block, cars=[
        RosterEntry(vehicle_id=car, state=state, hardware=HardwareGeneration.HW5) for car, state in cars.items()])


def offers(seq: int, *cars: str, withdraw: str | None = None) -> OfferFrame:
    now = utc_now()
    items: list[ComputeOffer | OfferWithdrawal] = [
        ComputeOffer(sender=car, sent_at=now, sim_time=now, offer_id=f"off-{car}", hardware=HardwareGeneration.HW5,
                     free_tops=5000.0, energy_budget_kwh=10.0, expected_departure=now + timedelta(hours=8),
                     departure_confidence=0.8, price_per_tops_hour=0.0004, soc=0.8) for car in cars]
    if withdraw:
        items.append(OfferWithdrawal(sender=withdraw, sent_at=now, sim_time=now, offer_id=f"off-{withdraw}",
                                     reason="leaves"))
    return OfferFrame(sender=GW, sent_at=now, sim_time=now, seq=seq, offers=items)


def fold(ledger: RunLedger, message: CarRoster | OfferFrame) -> None:
    channel = Channel.ROSTER if isinstance(message, CarRoster) else Channel.OFFER_FRAME
    ledger.observe(TopicInfo(channel, client_id=GW), message, 1.0, None)


def test_every_state_change_in_a_roster_counts_and_a_car_gone_from_its_block_has_left() -> None:
    ledger = RunLedger()
    on, asleep, off = Liveness.ONLINE, Liveness.ASLEEP, Liveness.OFFLINE
    fold(ledger, roster(0, {"car-a": on, "car-b": on, "car-c": on}))
    fold(ledger, roster(1, {"car-d": on}))
    assert ledger.counters.state_changes == 4 and ledger.cars_online() == 4
    fold(ledger, roster(0, {"car-a": on, "car-b": asleep, "car-c": on}))  # one change; the others restated
    assert ledger.counters.state_changes == 5
    fold(ledger, roster(0, {"car-a": on, "car-b": off}))  # car-b leaves, car-c is gone from the block
    assert ledger.counters.state_changes == 7
    assert ledger.online_cars() == ["car-a", "car-d"] and ledger.car_gateway["car-a"] == GW


def test_offer_frames_count_their_items_and_a_seq_gap_is_a_frame_missed() -> None:
    ledger = RunLedger()
    fold(ledger, offers(0, "car-a", "car-b"))
    fold(ledger, offers(1, "car-c", withdraw="car-a"))
    fold(ledger, offers(4, "car-d"))  # frames 2 and 3 never arrived
    fold(ledger, offers(0, "car-e"))  # the gateway process started again: not a gap
    assert ledger.counters.by_kind["offer"] == 5 and ledger.counters.by_kind["offer_withdrawn"] == 1
    assert ledger.counters.frames_missed == 2
    report = {"counters": ledger.counters.as_dict()}
    assert [v.passed for v in evaluate({"max_frames_missed": 0}, report)] == [False]


async def test_the_observer_decodes_frames_from_the_broker(amqtt_broker: TestBroker) -> None:
    topics = amqtt_broker.topics
    ledger = RunLedger()
    observer = Observer(amqtt_broker.url(), topics, ledger, time.monotonic(), telemetry_sample=5)
    task = asyncio.create_task(observer.run())
    try:
        await asyncio.wait_for(observer.connected.wait(), 10)
        async with make_client(amqtt_broker.url(), "t-gw") as client:
            cars = {f"car-{i:03d}": Liveness.ONLINE for i in range(300)}
            await client.publish(topics.roster(GW, 0), encode(roster(0, cars)), qos=1)
            await client.publish(topics.offer_frames(GW), encode(offers(0, "car-001", "car-002")), qos=1)
            await client.publish(topics.roster(GW, 1), encode(roster(0, cars)), qos=1)  # block 0 on block 1's topic
            await client.publish(topics.roster("gw-other", 0), encode(roster(0, cars)), qos=1)  # another's name
        await wait_until(lambda: ledger.counters.receives >= 4, 10, "four frames at the observer")
    finally:
        await cancel_and_wait(task)
    assert ledger.counters.state_changes == 300 and ledger.cars_online() == 300
    assert ledger.counters.by_kind["offer"] == 2 and ledger.counters.rejected == 2
    assert ledger.latency.stats().count == 2  # live frames are timed


def test_the_stack_memory_sums_every_process_of_its_groups() -> None:
    own = stack_rss_bytes([], os.getpid())
    assert own > 10 * 2**20  # this Python process alone
    child = subprocess.Popen([sys.executable, "-c", "import sys; b = bytearray(200 * 2**20); sys.stdin.read()"],
                             stdin=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while stack_rss_bytes([child.pid]) < 200 * 2**20:
            assert time.monotonic() < deadline, "the child never grew to 200 MiB"
            time.sleep(0.05)
        assert stack_rss_bytes([child.pid], os.getpid()) >= own + 200 * 2**20
    finally:
        child.kill()
        child.wait()
