"""Faults are visible: what the dispatcher detects has a counter in its summary; the fleet counts
what it injected; the car view gets the ledger's reliability on each assignment."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fake_vehicles.runner import injected_text
from protocol import ConnectionStatus, Liveness, ShardAssignment, decode
from tests.test_dispatcher_engine import Harness


def test_a_car_that_times_out_mid_shard_is_counted_twice_over(tmp_path: Path) -> None:
    """The heartbeat timeout and the shard it was running are each counted in the summary."""
    h = Harness(tmp_path)
    h.car("car-a")
    h.send(h.topics.job_submit, h.job(shards=1, max_parallel_shards=1))
    (assigned,) = [m for m in (decode(o.payload) for o in h.engine.tick()) if isinstance(m, ShardAssignment)]
    assert assigned.car_reliability == 1.0  # a car never judged has a clean record
    assert h.engine.summary().faults_detected == {}
    h.wall.advance(11)  # past the 10 s heartbeat timeout
    h.engine.tick()
    faults = h.engine.summary().faults_detected
    assert faults == {"cars_timed_out": 1, "shards_lost_car_gone": 1}


def test_a_gateway_that_vanishes_loses_its_cars_shards_and_they_are_counted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.car("car-a", gateway="gw-1")
    h.car("car-b", gateway="gw-1")
    h.send(h.topics.job_submit, h.job(shards=2, max_parallel_shards=2))
    h.engine.tick()
    h.send(h.topics.connection_status("gw-1"), ConnectionStatus(**h.env("gw-1"), role="gateway",
                                                                 state=Liveness.OFFLINE))
    assert h.engine.summary().faults_detected == {"shards_lost_car_gone": 2}


def test_the_fleet_reports_what_it_injected() -> None:
    counts = Counter({"wrong_results": 3, "vanished": 1, "results": 40})
    assert injected_text(counts) == "; injected: wrong_results 3, vanished 1"
    assert injected_text(Counter({"results": 4})) == ""
