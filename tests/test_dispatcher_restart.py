"""The ledger across a kill -9 of a `fleetroom dispatcher` process: no job lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from protocol import Liveness
from tests.support.brokers import TestBroker
from tests.support.demo_loadtest import clean_env
from tests.support.scripted_cars import CarScript, Watcher, scripted_fleet
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


async def start_dispatcher(broker: TestBroker, db: Path, log: Path) -> asyncio.subprocess.Process:
    env = clean_env()
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetroom", "dispatcher", "--broker", f"mqtt://127.0.0.1:{broker.port}",
        "--topic-prefix", broker.topics.prefix, "--db", str(db), "--heartbeat-timeout", "2",
        "--summary-interval", "0.2", "--speed", "60",
        cwd=db.parent, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log.open("ab"),
    )


def ledger_facts(db: Path) -> dict[str, float]:
    with sqlite3.connect(db) as conn:
        totals = dict(conn.execute("SELECT name, value FROM totals"))
        paid_work = conn.execute("SELECT COALESCE(SUM(work_tera_ops), 0) FROM assignments WHERE paid = 1").fetchone()[0]
        car_work = conn.execute("SELECT SUM(tera_ops), SUM(gross) FROM cars").fetchone()
        job_cost = conn.execute("SELECT SUM(cost) FROM jobs").fetchone()[0]
        shards_done = conn.execute("SELECT COUNT(*) FROM shards WHERE status = 'done'").fetchone()[0]
        status = conn.execute("SELECT status FROM jobs WHERE job_id = 'job-kill'").fetchone()[0]
    return {**totals, "paid_work": paid_work, "car_work": car_work[0], "car_gross": car_work[1],
            "job_cost": job_cost, "shards_done": shards_done, "status": status}


async def test_kill_9_mid_job_then_restart_finishes_it_once(amqtt_broker: TestBroker, tmp_path: Path) -> None:
    url, topics = amqtt_broker.url(), amqtt_broker.topics
    db, log = tmp_path / "ledger.sqlite", tmp_path / "dispatcher.log"
    # Cars offer once per idle spell (as the emulated fleet does): after the restart the
    # dispatcher knows their standing offers from the ledger, not from a fresh announcement.
    scripts = [CarScript(f"car-{i}", step_delay_s=0.08, duplicate_results=True, refresh_offers=False)
               for i in range(3)]
    # The watcher, then the dispatcher, then the cars, each once the one before has subscribed
    # (amqtt 0.12.1 breaks when a client connects while another subscribes).
    async with Watcher(url, topics) as watch:
        first = await start_dispatcher(amqtt_broker, db, log)
        try:
            await asyncio.wait_for(watch.summary_seen.wait(), 20)
            async with scripted_fleet(url, topics, scripts):
                await run_kill_and_restart(amqtt_broker, watch, first, db, log)
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
    facts = ledger_facts(db)
    assert facts["status"] == "done" and facts["shards_done"] == 8
    assert facts["shards_completed"] == 8, "a shard was counted twice"
    assert facts["work_done"] == pytest.approx(facts["paid_work"])
    assert facts["car_work"] == pytest.approx(facts["work_done"])
    assert facts["car_gross"] == pytest.approx(facts["earnings_gross"]) == pytest.approx(facts["job_cost"])
    # 16 replicas of 1000 tera-ops were accepted; work paid beyond that is only preempted or lost work.
    assert facts["work_done"] >= 16 * 1000.0 - 1e-6


async def run_kill_and_restart(
    broker: TestBroker, watch: Watcher, first: asyncio.subprocess.Process, db: Path, log: Path
) -> None:
    job = await watch.submit(job_id="job-kill", name="survivor", total_work_tera_ops=8000.0, shards=8,
                             min_tops_per_car=100.0, max_parallel_shards=3, redundancy=2)
    await wait_until(lambda: (s := watch.states.get(job)) is not None and s.shards_done >= 2, 30,
                     "two shards done before the kill")
    assert watch.connections.get("dispatcher") is Liveness.ONLINE
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert first.returncode == -signal.SIGKILL
    await wait_until(lambda: watch.connections.get("dispatcher") is Liveness.OFFLINE, 10, "the dispatcher's Will")
    assert ledger_facts(db)["status"] == "running"
    second = await start_dispatcher(broker, db, log)
    try:
        await wait_until(lambda: watch.status(job) == "done", 40, "the job to finish after the restart")
        assert watch.connections.get("dispatcher") is Liveness.ONLINE
    finally:
        second.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(second.wait(), 15)
    assert code == 0, log.read_text()[-2000:]
