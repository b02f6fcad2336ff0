"""The owner-mode change end to end on a real broker: operator link -> fleet process -> dispatcher ledger,
and the ledger's earnings back on the wire (the per-car figures only for whoever asks for that car)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from dispatcher.ledger import earnings as book
from mqttlink import OperatorLink, client_id_of, make_client
from protocol import OwnerMode, Topics, decode
from protocol.owners import CarEarnings, EarningsReport
from tests.support.brokers import TestBroker
from tests.support.scripted_cars import dispatcher_running
from tests.support.waiting import wait_until
from tests.test_vehicle_broker import fleet_process


class Reader:
    """A client subscribed to `filters`, keeping each message it is sent by type."""

    def __init__(self, broker: TestBroker, name: str, filters: tuple[str, ...]) -> None:
        self.broker, self.name, self.filters = broker, name, filters
        self.seen: list[object] = []

    def of(self, kind: type, where: Callable[[object], bool] = lambda m: True) -> list[object]:
        return [m for m in self.seen if isinstance(m, kind) and where(m)]

    async def run(self, ready: asyncio.Event) -> None:
        url = self.broker.url("observer")
        async with make_client(url, client_id_of(url, self.name)) as client:
            for topic_filter in self.filters:
                await client.subscribe(topic_filter, qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.seen.append(decode(message.payload))


async def _reading(broker: TestBroker, name: str, filters: tuple[str, ...]) -> tuple[Reader, asyncio.Task[None]]:
    reader, ready = Reader(broker, name, filters), asyncio.Event()
    task = asyncio.create_task(reader.run(ready))
    await asyncio.wait_for(ready.wait(), 10)
    return reader, task


async def test_set_owner_mode_reaches_the_car_and_its_trips_reach_the_ledger(
    amqtt_broker: TestBroker, tmp_path: Path
) -> None:
    topics: Topics = amqtt_broker.topics
    async with dispatcher_running(amqtt_broker, tmp_path / "l.sqlite") as engine, fleet_process(
        amqtt_broker, tmp_path, "--count", "4", "--mode", "gateway", "--speed", "1200", "--seed", "11",
    ):
        await wait_until(lambda: len(engine.money.modes) == 4, 30, "every car's owner mode heard")
        cars = sorted(engine.money.modes)
        assert engine.ledger.totals()["robotaxi_trips"] == 0
        url = amqtt_broker.url("operator")
        async with make_client(url, client_id_of(url, "operator")) as client:
            link = OperatorLink(client, topics, sender="operator", dispatcher_online=None)
            for vid in cars:
                await link.set_owner_mode(vid, OwnerMode.BOTH)  # 10:00 on a Monday: robotaxi hours
        await wait_until(lambda: all(engine.money.modes[v] is OwnerMode.BOTH for v in cars), 20,
                         "the cars' statuses to show the new mode")
        await wait_until(lambda: engine.ledger.totals()["robotaxi_trips"] >= 1, 60, "a robotaxi trip booked")
        db = engine.ledger.db
        money = {c.vehicle_id: c for c in book.cars_money(db)}
        assert {money[v].owner_mode for v in cars} == {OwnerMode.BOTH}
        rider = next(v for v in cars if money[v].money.robotaxi_trips > 0)
        assert money[rider].money.robotaxi_gross > 0 and money[rider].money.energy_cost > 0
        assert engine.ledger.rejections().get("trip_not_in_robotaxi_mode", 0) == 0

        room, room_task = await _reading(amqtt_broker, "observer-room", topics.control_room)
        car_view, car_task = await _reading(amqtt_broker, "observer-car", (topics.car_earnings(rider),))
        try:
            await wait_until(lambda: room.of(EarningsReport, lambda r: r.fleet.robotaxi_trips >= 1), 20,  # type: ignore[attr-defined]
                             "the retained earnings report")
            await wait_until(lambda: car_view.of(CarEarnings, lambda e: e.car.money.robotaxi_trips >= 1), 20,  # type: ignore[attr-defined]
                             "the rider's own figures with its trip")
            assert {e.car.vehicle_id for e in car_view.of(CarEarnings)} == {rider}  # type: ignore[attr-defined]
            assert room.of(CarEarnings) == []  # the control room's filters leave per-car figures out
        finally:
            room_task.cancel()
            car_task.cancel()
            await asyncio.gather(room_task, car_task, return_exceptions=True)
