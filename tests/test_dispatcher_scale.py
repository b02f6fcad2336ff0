"""What keeps the dispatcher's loop free at a million cars, as behaviour (timings: bench/dispatcher_ingest.py).

Open jobs' submissions are parsed once and forgotten when the job ends or its id is taken
again; owner modes are written set-based; the earnings report is built on a read-only
connection of its own (so, in a thread, it neither waits for the loop's writes nor sees half of one).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from dispatcher.ledger import Ledger
from dispatcher.ledger import earnings as book
from dispatcher.registry import Registry
from dispatcher.watching import WatchedAssignment, Watchlist
from protocol import ComputeOffer, HardwareGeneration, JobStatus, Liveness, OwnerMode, VehicleStatus, decode
from protocol.owners import EarningsReport
from tests.test_dispatcher_money import Money


@pytest.fixture
def m(tmp_path: Path) -> Money:
    return Money(tmp_path / "ledger.sqlite")


def test_open_jobs_parse_each_submission_once_and_follow_submissions_and_cancels(m: Money) -> None:
    m.job(job_id="job-1")
    m.job(job_id="job-2")
    first = m.ledger.open_jobs()
    again = m.ledger.open_jobs()
    assert [j.job_id for j in first] == ["job-1", "job-2"]
    assert all(a.submission is b.submission for a, b in zip(first, again, strict=True))  # not parsed again
    m.job(job_id="job-3")
    assert [j.job_id for j in m.ledger.open_jobs()] == ["job-1", "job-2", "job-3"]
    m.ledger.end_job("job-2", JobStatus.CANCELLED, "by the operator")
    assert [j.job_id for j in m.ledger.open_jobs()] == ["job-1", "job-3"]
    fresh = Ledger(m.ledger.path)  # what a restarted dispatcher would parse from the file
    assert [(j.job_id, j.submission, j.deadline_s) for j in fresh.open_jobs()] == \
        [(j.job_id, j.submission, j.deadline_s) for j in m.ledger.open_jobs()]


def test_a_rejected_id_taken_by_a_corrected_job_is_parsed_anew(m: Money) -> None:
    m.ledger.reject_job("job-9", "bad", "shards 0")
    assert m.ledger.open_jobs() == []
    m.job(job_id="job-9", shards=3)
    (job,) = m.ledger.open_jobs()
    assert job.submission.shards == 3
    m.ledger.end_job("job-9", JobStatus.CANCELLED, "gone")
    m.job(job_id="job-10", shards=5)
    assert [(j.job_id, j.submission.shards) for j in m.ledger.open_jobs()] == [("job-10", 5)]


def _report(out_payload: bytes) -> dict[str, object]:
    report = decode(out_payload)
    assert isinstance(report, EarningsReport)
    return json.loads(report.model_dump_json(exclude={"sent_at"}))  # type: ignore[no-any-return]


def test_the_report_built_off_the_loop_equals_a_full_recomputation(m: Money) -> None:
    for i, mode in enumerate([OwnerMode.COMPUTE, OwnerMode.BOTH, OwnerMode.ROBOTAXI, OwnerMode.NONE] * 3):
        vid = f"car-{i:02d}"
        m.send(m.topics.vehicle_status(vid), VehicleStatus(**m.env(vid), state=Liveness.ONLINE,
                                                           owner_id=f"owner-{i % 4}", owner_mode=mode))
    m.car("car-a")
    m.car("car-b")
    m.job(redundancy=2)
    first, second = m.assign()
    m.later(11.0)
    m.result(first)
    m.result(second)
    m.engine.earnings_cars()  # the modes heard are in the ledger before the report
    (off_loop,) = m.engine.earnings_report()
    recomputed = m.engine.money.report(m.sim_now())  # on the loop's own connection, every sum again
    assert _report(off_loop.payload) == _report(recomputed.model_dump_json().encode())
    fleet = book.fleet_money(m.ledger.db)
    assert fleet.compute_gross == pytest.approx(m.ledger.totals()["earnings_gross"]) and fleet.compute_gross > 0
    assert {mode.owner_mode.value: mode.cars for mode in recomputed.by_mode} == \
        {"compute": 5, "both": 3, "robotaxi": 3, "none": 3}


def test_the_report_does_not_wait_for_a_write_held_on_the_loops_connection(m: Money) -> None:
    m.send(m.topics.vehicle_status("car-a"), VehicleStatus(**m.env("car-a"), state=Liveness.ONLINE,
                                                             owner_mode=OwnerMode.COMPUTE))
    m.engine.earnings_cars()
    with m.ledger.transaction() as db:  # the loop is in the middle of a write ...
        db.execute("UPDATE totals SET value = value + 1 WHERE name = 'earnings_gross'")
        db.execute("UPDATE cars SET gross = gross + 1")
        (out,) = m.engine.earnings_report()  # ... the report reads the last committed state, unblocked
    report = decode(out.payload)
    assert isinstance(report, EarningsReport) and report.fleet.compute_gross == 0.0 and report.cars == 1


def test_standing_offers_survive_a_restart_as_rows_and_old_json_ones_are_taken_over(tmp_path: Path) -> None:
    first = Money(tmp_path / "l.sqlite")
    first.car("car-a")
    first.car("car-b")
    first.engine.tick()  # the standing offers are written once per tick
    kept = first.engine.offers.book.offers["car-a"]
    legacy = ComputeOffer(**first.env("car-old"), offer_id="o9", hardware=HardwareGeneration.HW5, free_tops=4000.0,
                          energy_budget_kwh=5.0, expected_departure=first.sim_now() + timedelta(hours=3),
                          departure_confidence=0.5, price_per_tops_hour=0.03, soc=0.6)
    first.ledger.db.execute("INSERT INTO offers VALUES (?, ?)", ("car-old", legacy.model_dump_json()))  # as 1.0 kept
    first.ledger.close()
    again = Money(tmp_path / "l.sqlite")
    again.engine.startup()
    book = again.engine.offers.book.offers
    assert set(book) == {"car-a", "car-b", "car-old"}
    restored = book["car-a"]
    assert (restored.offer_id, restored.free_tops, restored.departure_at_s, restored.local_offered_s) == \
        (kept.offer_id, kept.free_tops, kept.departure_at_s, kept.local_offered_s)
    assert again.engine.registry.cars["car-a"].state == "idle" and book["car-old"].free_tops == 4000.0
    again.engine.tick()
    assert again.ledger.db.execute("SELECT COUNT(*) FROM offers").fetchone() == (0,)
    assert sorted(row[0] for row in again.ledger.standing_offers()) == ["car-a", "car-b", "car-old"]


def test_silences_come_due_from_the_heap_and_the_totals_match_a_recount() -> None:
    registry = Registry(heartbeat_timeout_s=10.0)
    watch = Watchlist(registry)
    for i in range(6):
        watch.watch(f"a{i}", WatchedAssignment(f"car-{i % 3}", "job-1", f"s{i % 4}", 100.0 * (i + 1), 0.0, 10.0))
    watch.watched["a1"].last_heard_wall = 8.0  # heard since it was watched: silent only at 18
    watch.watched["a2"].silence_limit_s = 30.0
    assert watch.silent(5.0) == []
    assert sorted(watch.silent(11.0)) == ["a0", "a3", "a4", "a5"]
    watch.unwatch("a0")
    watch.unwatch("a3")
    assert sorted(watch.silent(12.0)) == ["a4", "a5"]  # still watched until their loss is recorded
    assert sorted(watch.silent(19.0)) == ["a1", "a4", "a5"]
    assert sorted(watch.silent(31.0)) == ["a1", "a2", "a4", "a5"]
    live = watch.watched.values()
    assert watch.tops_allocated == sum(w.allocated_tops for w in live)
    assert watch.shards_running == len({(w.job_id, w.shard_id) for w in live}) == 3
    for aid in list(watch.watched):
        watch.unwatch(aid)
    assert (watch.tops_allocated, watch.shards_running, watch.silent(100.0)) == (0.0, 0, [])


def test_expiry_looks_at_a_slice_of_the_queue_per_call_and_keeps_gateway_cars_alive() -> None:
    """A fleet due at once is walked over several ticks: each call looks at `budget` cars at most."""
    registry = Registry(heartbeat_timeout_s=10.0)
    for i in range(10):
        registry.join(f"car-{i}", "HW5", "gw-1" if i < 6 else None, None)
        registry.heard(f"car-{i}", 0.0)
    registry.heard_gateway("gw-1", 15.0)  # gw-1's six cars live on through their gateway
    assert registry.expire(20.0, budget=4) == []  # four gateway cars moved to the back
    assert registry.expire(20.0, budget=4) == ["car-6", "car-7"]  # two more moved, then two cars silent
    assert registry.expire(20.0, budget=4) == ["car-8", "car-9"]
    assert registry.expire(20.0, budget=4) == []  # what is left was heard (through gw-1) at 15
    assert registry.by_state["offline"] == 4 and registry.online_count == 6
    assert registry.expire(26.0, budget=100) == [f"car-{i}" for i in range(6)]  # gw-1 silent since 15 too


def test_only_cars_that_earned_something_get_their_own_earnings_message(m: Money) -> None:
    for vid, mode in (("car-a", OwnerMode.COMPUTE), ("car-b", OwnerMode.COMPUTE), ("car-z", OwnerMode.ROBOTAXI)):
        m.send(m.topics.vehicle_status(vid), VehicleStatus(**m.env(vid), state=Liveness.ONLINE, owner_mode=mode))
    m.car("car-a")
    m.job(shards=1)
    (assignment,) = m.assign()
    m.later(11.0)
    m.result(assignment)
    m.send(m.topics.vehicle_status("car-z"), VehicleStatus(**m.env("car-z"), state=Liveness.ONLINE,
                                                             owner_mode=OwnerMode.NONE))  # a change, no money
    published = [decode(out.payload) for out in m.engine.earnings_cars()]
    assert [message.car.vehicle_id for message in published] == ["car-a"]  # type: ignore[union-attr]
    assert m.engine.money.changed == set()  # the others were looked at and left out, not kept for later


def test_a_batch_of_modes_mixing_new_and_known_cars_closes_the_known_ones_stretches(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.set_owner_modes([("car-a", "owner-1", OwnerMode.COMPUTE), ("car-c", "car-c", OwnerMode.BOTH)], 100.0)
    ledger.set_owner_modes([("car-b", "owner-2", OwnerMode.ROBOTAXI), ("car-a", "owner-1", OwnerMode.ROBOTAXI),
                            ("car-c", "owner-3", OwnerMode.BOTH)], 160.0)  # car-b new, car-a changes, car-c the same
    found = ledger.db.execute("SELECT vehicle_id, owner_id, owner_mode, mode_since_s FROM cars")
    cars = {row[0]: row[1:] for row in found}
    assert cars == {"car-a": ("owner-1", "robotaxi", 160.0), "car-b": ("owner-2", "robotaxi", 160.0),
                    "car-c": ("owner-3", "both", 100.0)}  # an owner named later is taken, its stretch goes on
    stretches = ledger.db.execute("SELECT vehicle_id, owner_mode, seconds FROM mode_money").fetchall()
    assert stretches == [("car-a", "compute", 60.0)]
