"""The dispatcher in-process against a real amqtt broker and scripted cars."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dispatcher.jobs import UNRELIABLE_BELOW
from dispatcher.views import Out
from mqttlink import BrokerUrl, client_id_of, make_client
from protocol import CancelJob, HardwareGeneration, Topics, encode, utc_now
from protocol.topics import DELIVERY, Channel
from tests.support.brokers import TestBroker
from tests.support.scripted_cars import CarScript, Watcher, dispatcher_running, honest_digest, scripted_fleet
from tests.support.waiting import wait_until

JOB = {"name": "demo", "total_work_tera_ops": 4000.0, "min_tops_per_car": 100.0, "checkpoint_interval_s": 60.0}


async def test_honest_cars_finish_a_redundant_job_and_are_paid(amqtt_broker: TestBroker, tmp_path: Path) -> None:
    scripts = [CarScript(f"car-{i}", owner_id="owner-a" if i < 2 else "owner-b") for i in range(3)]
    async with dispatcher_running(amqtt_broker, tmp_path / "l.sqlite") as engine, \
            Watcher(amqtt_broker.url(), amqtt_broker.topics) as watch, \
            scripted_fleet(amqtt_broker.url(), amqtt_broker.topics, scripts) as cars:
        job = await watch.submit(job_id="job-ok", shards=4, max_parallel_shards=3, redundancy=2, **JOB)
        await wait_until(lambda: watch.status(job) == "done", 20, "the job to finish")
        state = watch.states[job]
        assert (state.shards_done, state.progress, state.wrong_results) == (4, 1.0, 0)
        assert sum(len(c.log.assignments) for c in cars) == 8  # 4 shards x 2 replicas, each on its own car
        for car in cars:
            shards = [a.shard_id for a in car.log.assignments]
            assert len(shards) == len(set(shards)), "two replicas of one shard on one car"
        totals = engine.ledger.totals()
        assert totals["shards_completed"] == 4
        assert abs(totals["work_done"] - 8000.0) < 1e-6  # every replica's work is paid, once
        owners = {s.who: s for s in engine.ledger.owner_statements()}
        assert set(owners) == {"owner-a", "owner-b"}
        assert abs(sum(s.gross for s in owners.values()) - totals["earnings_gross"]) < 1e-9
        assert abs(state.cost - totals["earnings_gross"]) < 1e-9
        assert abs(sum(s.tops_hours for s in owners.values()) - 8000.0 / 3600.0) < 1e-9
        await wait_until(lambda: watch.summary is not None and watch.summary.shards_completed == 4, 5, "summary")
        assert watch.summary is not None and watch.summary.cars_known == 3


async def test_preempted_shard_resumes_from_its_checkpoint(amqtt_broker: TestBroker, tmp_path: Path) -> None:
    url, topics = amqtt_broker.url(), amqtt_broker.topics
    # Checkpoints every 2 of 4 steps, handed back after step 3: one step (1000 tera-ops) is redone.
    leaver = CarScript("car-leaver", behaviour="preempt", steps=4, steps_before_trouble=3, checkpoint_every=2,
                       free_tops=9000.0, hardware=HardwareGeneration.HW6)
    async with dispatcher_running(amqtt_broker, tmp_path / "l.sqlite"), Watcher(url, topics) as watch:
        async with scripted_fleet(url, topics, [leaver]) as (car,):
            job = await watch.submit(job_id="job-pre", shards=1, max_parallel_shards=1, redundancy=1, **JOB)
            await wait_until(lambda: len(car.log.preempted) == 1, 10, "the preemption")
        async with scripted_fleet(url, topics, [CarScript("car-b"), CarScript("car-c")]) as others:
            await wait_until(lambda: watch.status(job) == "done", 20, "the job to finish elsewhere")
            resumed = [a for c in others for a in c.log.assignments]
            first = min(resumed, key=lambda a: a.sent_at)
            assert first.resume_from_tera_ops == car.log.preempted[0].checkpoint_tera_ops == 2000.0
            assert first.checkpoint == "ckpt@2000.000"
        state = watch.states[job]
        assert state.preemptions == 1 and state.redone_tera_ops == 1000.0
        one_interval = car.log.assignments[0].allocated_tops * car.log.assignments[0].checkpoint_interval_s
        assert state.redone_tera_ops <= one_interval


async def test_a_wrong_result_is_never_accepted(amqtt_broker: TestBroker, tmp_path: Path) -> None:
    url, topics = amqtt_broker.url(), amqtt_broker.topics
    liar = CarScript("car-liar", behaviour="wrong", free_tops=20000.0, hardware=HardwareGeneration.HW6)
    scripts = [liar, CarScript("car-h1"), CarScript("car-h2")]
    async with dispatcher_running(amqtt_broker, tmp_path / "l.sqlite") as engine, Watcher(url, topics) as watch, \
            scripted_fleet(url, topics, scripts) as cars:
        job = await watch.submit(job_id="job-val", shards=3, max_parallel_shards=3, redundancy=2, **JOB)
        await wait_until(lambda: watch.status(job) == "done", 25, "the job to finish")
        accepted = engine.ledger.db.execute(
            "SELECT shard_id, accepted_digest, input_digest FROM shards WHERE job_id = ?", (job,)).fetchall()
        assert len(accepted) == 3
        for shard_id, digest, input_digest in accepted:
            assert digest == honest_digest(input_digest, shard_id)
        assert watch.states[job].wrong_results >= 1
        _, wrong, reliability = engine.ledger.car_record("car-liar")
        assert wrong >= 1 and reliability < UNRELIABLE_BELOW
        assert engine.ledger.statement("car-liar").gross == 0.0
        before = len(cars[0].log.assignments)
        second = await watch.submit(job_id="job-val2", shards=2, max_parallel_shards=4, redundancy=2, **JOB)
        await wait_until(lambda: watch.status(second) == "done", 25, "the second job to finish")
        assert len(cars[0].log.assignments) == before, "an unreliable car got more work"


async def test_a_vanished_car_is_replaced(amqtt_broker: TestBroker, tmp_path: Path) -> None:
    url, topics = amqtt_broker.url(), amqtt_broker.topics
    ghost = CarScript("car-ghost", behaviour="vanish", free_tops=9000.0, hardware=HardwareGeneration.HW6)
    async with dispatcher_running(amqtt_broker, tmp_path / "l.sqlite") as engine, Watcher(url, topics) as watch:
        async with scripted_fleet(url, topics, [ghost]) as (car,):
            job = await watch.submit(job_id="job-ghost", shards=1, max_parallel_shards=1, redundancy=1, **JOB)
            await wait_until(lambda: car.gone, 10, "the car to vanish")
            await wait_until(lambda: engine.registry.cars["car-ghost"].state == "offline", 15, "its Will")
            async with scripted_fleet(url, topics, [CarScript("car-b"), CarScript("car-c")]):
                await wait_until(lambda: watch.status(job) == "done", 20, "the job to finish elsewhere")
        assert watch.states[job].preemptions == 1


async def test_cancelled_job_withdraws_its_shards(amqtt_broker: TestBroker, tmp_path: Path) -> None:
    url, topics = amqtt_broker.url(), amqtt_broker.topics
    async with dispatcher_running(amqtt_broker, tmp_path / "l.sqlite"), Watcher(url, topics) as watch, \
            scripted_fleet(url, topics, [CarScript("car-slow", behaviour="silent")]) as (car,):
        job = await watch.submit(job_id="job-cancel", shards=2, max_parallel_shards=1, **JOB)
        await wait_until(lambda: len(car.log.assignments) == 1, 10, "an assignment")
        cancel = CancelJob(sender="operator", sent_at=utc_now(), sim_time=utc_now(), job_id=job, reason="test")
        await watch.publish(topics.dispatcher_control, encode(cancel))
        await wait_until(lambda: watch.status(job) == "cancelled", 10, "the cancellation")
        await wait_until(lambda: len(car.log.cancels) == 1, 10, "the shard cancel")
        assert car.log.cancels[0].assignment_id == car.log.assignments[0].assignment_id


async def test_under_fleet_credentials_and_acl(secure_broker: TestBroker, tmp_path: Path) -> None:
    """Logged in as `dispatcher`, `operator` and each car, on amqtt's plugins and on mosquitto."""
    topics = secure_broker.topics
    scripts = [CarScript("car-aa"), CarScript("car-bb")]
    async with dispatcher_running(secure_broker, tmp_path / "l.sqlite"), \
            Watcher(secure_broker.url("operator"), topics) as watch, \
            scripted_fleet(secure_broker.url, topics, scripts):
        job = await watch.submit(job_id="job-acl", shards=2, max_parallel_shards=4, redundancy=2, **JOB)
        await wait_until(lambda: watch.status(job) == "done", 20, "the job to finish")
        await wait_until(lambda: watch.summary is not None and watch.summary.shards_completed == 2, 5, "summary")


async def test_a_bug_costs_one_message_and_one_tick_not_the_dispatcher(
    amqtt_broker: TestBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, topics = amqtt_broker.url(), amqtt_broker.topics
    async with dispatcher_running(amqtt_broker, tmp_path / "l.sqlite") as engine, Watcher(url, topics) as watch:
        handle, tick, ticks_failing = engine.handle, engine.tick, [1]

        def buggy_handle(topic: str, payload: bytes) -> list[Out]:
            if payload == b"poison":
                raise RuntimeError("a bug in handling")
            return handle(topic, payload)

        def buggy_tick() -> list[Out]:
            if ticks_failing:
                ticks_failing.pop()
                raise RuntimeError("a bug in a tick")
            return tick()

        monkeypatch.setattr(engine, "handle", buggy_handle)
        monkeypatch.setattr(engine, "tick", buggy_tick)
        await watch.publish(topics.job_submit, b"poison")
        await wait_until(lambda: engine.rejections()["internal_error"] == 2, 10, "the message and the tick to fail")
        async with scripted_fleet(url, topics, [CarScript("car-a"), CarScript("car-b")]):
            job = await watch.submit(job_id="job-after", shards=1, max_parallel_shards=1, **JOB)
            await wait_until(lambda: watch.status(job) == "done", 20, "a job after the failures")



async def _record_deliveries(url: BrokerUrl, topics: Topics, filters: list[str], seen: dict[Channel, tuple[int, bool]],
                             wanted: set[Channel], subscribed: asyncio.Event | None = None, *, retained: bool) -> None:
    """Subscribe at QoS 1 and keep the QoS of the first retained (or live) message of each channel until `wanted`."""
    async with make_client(url, client_id_of(url, "qos-probe")) as client:
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        if subscribed is not None:
            subscribed.set()
        async for message in client.messages:
            if message.retain == retained:
                seen.setdefault(topics.parse(str(message.topic)).channel, (message.qos, message.retain))
            if wanted <= seen.keys():
                return


async def test_each_channel_goes_out_with_the_qos_and_retain_flag_of_the_delivery_table(
    any_broker: TestBroker, tmp_path: Path
) -> None:
    """Commands and job states at QoS 1, the summary at QoS 0; the summary, job states and status retained.

    The QoS is read on Mosquitto's live deliveries to a QoS 1 subscriber (amqtt 0.12.1 hands every
    message out at the subscriber's QoS); the retain flag on what a late subscriber gets, on both.
    """
    url, topics = any_broker.url(), any_broker.topics
    live: dict[Channel, tuple[int, bool]] = {}
    kept: dict[Channel, tuple[int, bool]] = {}
    published = {Channel.COMMANDS, Channel.JOB_STATE, Channel.SUMMARY}
    async with dispatcher_running(any_broker, tmp_path / "l.sqlite"), Watcher(url, topics) as watch:
        subscribed = asyncio.Event()
        filters = [topics.all_commands, topics.all_job_states, topics.summary]
        recording = asyncio.create_task(_record_deliveries(url, topics, filters, live, published, subscribed,
                                                           retained=False))
        await asyncio.wait_for(subscribed.wait(), 10)
        async with scripted_fleet(url, topics, [CarScript("car-a"), CarScript("car-b")]):
            job = await watch.submit(job_id="job-qos", shards=1, max_parallel_shards=1, **JOB)
            await wait_until(lambda: watch.status(job) == "done", 20, "the job to finish")
        await asyncio.wait_for(recording, 10)
        retained = {Channel.SUMMARY, Channel.JOB_STATE, Channel.CONNECTION_STATUS}
        filters = [topics.summary, topics.all_job_states, topics.connection_status("dispatcher")]
        await asyncio.wait_for(_record_deliveries(url, topics, filters, kept, retained, retained=True), 10)
    assert published == set(live)
    if any_broker.kind == "mosquitto":
        assert {channel: qos for channel, (qos, _) in live.items()} == {c: DELIVERY[c].qos for c in published}
        assert live[Channel.SUMMARY][0] == 0 and live[Channel.COMMANDS][0] == 1
    assert retained == {channel for channel in kept if DELIVERY[channel].retain}
    assert not DELIVERY[Channel.COMMANDS].retain
