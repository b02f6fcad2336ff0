"""The engine without a broker: payloads in, payloads out, a real SQLite ledger, a manual clock."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.engine import Engine
from dispatcher.ledger import Ledger
from dispatcher.views import Out
from protocol import (
    ComputeOffer,
    ConnectionStatus,
    FleetSummary,
    HardwareGeneration,
    JobState,
    JobSubmission,
    Liveness,
    MatchPolicy,
    SetPolicy,
    ShardAssignment,
    ShardCancel,
    ShardProgress,
    ShardRefused,
    ShardResult,
    Topics,
    VehicleStatus,
    decode,
    encode,
)
from protocol.clock import ManualClock

T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.topics = Topics("eng")
        self.wall = ManualClock()
        self.ledger = Ledger(tmp_path / "ledger.sqlite")
        self.engine = Engine(self.topics, self.ledger, sim_now=self.sim_now, wall=self.wall, rng=random.Random(1),
                             heartbeat_timeout_s=10.0)

    def sim_now(self) -> datetime:
        return T0 + timedelta(seconds=self.wall.t * 60)

    def env(self, sender: str) -> dict[str, object]:
        return {"sender": sender, "sent_at": T0, "sim_time": self.sim_now()}

    def send(self, topic: str, payload: bytes | object) -> list[tuple[str, object]]:
        raw = payload if isinstance(payload, bytes) else encode(payload)  # type: ignore[arg-type]
        return [(o.topic, decode(o.payload)) for o in self.engine.handle(topic, raw)]

    def car(self, vid: str, hw: HardwareGeneration = HardwareGeneration.HW5, gateway: str | None = None) -> None:
        self.send(self.topics.vehicle_status(vid), VehicleStatus(**self.env(vid), state=Liveness.ONLINE,
                                                                 hardware=hw, gateway=gateway))
        self.send(self.topics.offer(vid), ComputeOffer(
            **self.env(vid), offer_id="o1", hardware=hw, free_tops=5000.0, energy_budget_kwh=10.0,
            expected_departure=self.sim_now() + timedelta(hours=8), departure_confidence=0.9,
            price_per_tops_hour=0.02, soc=0.8))

    def job(self, **fields: object) -> bytes:
        base = {"job_id": "job-1", "name": "j", "total_work_tera_ops": 1000.0, "shards": 2,
                "min_tops_per_car": 100.0, "max_parallel_shards": 2}
        return JobSubmission.model_validate({**self.env("operator"), **base, **fields}).model_dump_json().encode()

    def states(self, outs: list[tuple[str, object]]) -> list[JobState]:
        return [m for _, m in outs if isinstance(m, JobState)]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_bad_submissions_get_a_rejection_back(h: Harness) -> None:
    invalid = json.loads(h.job())
    invalid["shards"] = 0
    (state,) = h.states(h.send(h.topics.job_submit, json.dumps(invalid).encode()))
    assert state.status.value == "rejected" and "shards" in state.reason
    (state,) = h.states(h.send(h.topics.job_submit, h.job(job_id="job-big", min_tops_per_car=1e6)))
    assert state.status.value == "rejected" and "largest car" in state.reason
    past = T0 - timedelta(hours=1)
    (state,) = h.states(h.send(h.topics.job_submit, h.job(job_id="job-late", deadline=past)))
    assert state.reason == "deadline is already past"
    assert h.send(h.topics.job_submit, b"{not json") == []  # no job id to answer on: counted only
    assert h.send(h.topics.job_submit, b'{"kind": "job_submit", "job_id": "BAD ID"}') == []
    summary = h.engine.summary()
    assert summary.messages_rejected == 5  # each undecodable or refused submission counted once
    assert summary.jobs_by_status["rejected"] == 3
    (state,) = h.states(h.send(h.topics.job_submit, h.job()))  # the corrected job takes the rejected id
    assert state.status.value == "queued"
    (again,) = h.states(h.send(h.topics.job_submit, h.job()))  # a resubmission is answered, not duplicated
    assert again.status.value == "queued"
    report = h.ledger.job_report("job-1")
    assert report is not None and report.shards_total == 2


def test_gateway_will_takes_its_cars_offline(h: Harness) -> None:
    h.car("car-a", gateway="gw-1")
    h.car("car-b", gateway="gw-1")
    h.car("car-c")
    assert h.engine.registry.state_counts()["idle"] == 3
    offline = ConnectionStatus(**h.env("gw-1"), role="gateway", state=Liveness.OFFLINE)
    h.send(h.topics.connection_status("gw-1"), offline)
    counts = h.engine.registry.state_counts()
    assert (counts["offline"], counts["idle"], counts["online"]) == (2, 1, 1)
    assert len(h.engine.offers.book) == 1


def test_heartbeat_timeout_and_reassignment(h: Harness) -> None:
    h.car("car-a")
    h.send(h.topics.job_submit, h.job(shards=1, max_parallel_shards=1))
    outs = [m for m in (decode(o.payload) for o in h.engine.tick()) if isinstance(m, ShardAssignment)]
    assert len(outs) == 1 and outs[0].vehicle_id == "car-a"
    h.wall.advance(11)
    h.car("car-b")
    ticked = [decode(o.payload) for o in h.engine.tick()]
    assert h.engine.registry.cars["car-a"].state == "offline"
    assert any(isinstance(m, ShardAssignment) and m.vehicle_id == "car-b" for m in ticked)
    assert h.engine.summary().preemptions == 1


def test_a_waiting_job_says_why(h: Harness) -> None:
    for i in range(3):
        h.car(f"car-{i}")
    h.send(h.topics.job_submit, h.job(min_hardware=HardwareGeneration.HW6))
    (state,) = [decode(o.payload) for o in h.engine.tick() if o.topic == h.topics.job_state("job-1")]
    assert isinstance(state, JobState) and state.status.value == "queued"
    reasons = {r.requirement: r.cars_failing for r in state.wait_reasons}
    assert reasons["hardware >= HW6"] == 3


def test_summary_and_policy_change(h: Harness) -> None:
    h.car("car-a", HardwareGeneration.HW6)
    h.car("car-b", HardwareGeneration.HW5)
    h.send(h.topics.dispatcher_control, SetPolicy(**h.env("operator"), policy=MatchPolicy.CHEAPEST))
    summary = h.engine.summary()
    assert isinstance(summary, FleetSummary) and summary.policy is MatchPolicy.CHEAPEST
    assert summary.cars_by_hardware == {"HW5": 1, "HW6": 1}
    assert summary.tops_offered == 10_000.0 and summary.cars_by_state["idle"] == 2


def assignments(outs: list[Out]) -> list[ShardAssignment]:
    return [m for m in (decode(o.payload) for o in outs) if isinstance(m, ShardAssignment)]


def result_for(h: Harness, a: ShardAssignment, digest: str | None = None) -> ShardResult:
    honest = hashlib.sha256(f"{a.input_digest}:{a.shard_id}".encode()).hexdigest()
    return ShardResult(**h.env(a.vehicle_id), assignment_id=a.assignment_id, job_id=a.job_id,  # type: ignore[arg-type]
                       shard_id=a.shard_id, result_digest=digest or honest, work_tera_ops=a.work_tera_ops,
                       energy_kwh=0.01, elapsed_s=1.0)


def test_duplicate_results_count_once(h: Harness) -> None:
    h.car("car-a")
    h.car("car-b")
    h.send(h.topics.job_submit, h.job(shards=1, max_parallel_shards=2, redundancy=2))
    first, second = assignments(h.engine.tick())
    for a in (first, second, first, second):  # QoS 1 may deliver each twice
        h.send(h.topics.shards(a.vehicle_id), result_for(h, a))
    totals = h.ledger.totals()
    assert totals["shards_completed"] == 1 and totals["work_done"] == 2000.0  # two replicas, paid once each
    assert h.ledger.statement("car-a").tops_hours == pytest.approx(1000.0 / 3600.0)
    wrong_sender = result_for(h, first)
    assert h.send(h.topics.shards("car-b"), wrong_sender) == []  # settled: ignored, whoever sends it
    assert h.ledger.totals() == totals


def test_a_refused_shard_goes_to_another_car(h: Harness) -> None:
    h.car("car-a")
    h.send(h.topics.job_submit, h.job(shards=1, max_parallel_shards=1))
    (first,) = assignments(h.engine.tick())
    refusal = ShardRefused(**h.env("car-a"), assignment_id=first.assignment_id, reason="not eligible")  # type: ignore[arg-type]
    h.send(h.topics.shards("car-a"), refusal)
    assert assignments(h.engine.tick()) == []  # its offer went with the refusal
    h.car("car-b")
    (second,) = assignments(h.engine.tick())
    assert second.vehicle_id == "car-b" and second.shard_id == first.shard_id
    assert h.engine.summary().preemptions == 0


def test_a_job_past_its_deadline_fails_and_withdraws_its_shards(h: Harness) -> None:
    h.car("car-a")
    h.send(h.topics.job_submit, h.job(shards=1, max_parallel_shards=1, deadline=h.sim_now() + timedelta(minutes=10)))
    (running,) = assignments(h.engine.tick())
    h.wall.advance(11)  # 11 wall seconds at 60x: 11 simulated minutes
    h.car("car-a")  # still alive
    outs = [decode(o.payload) for o in h.engine.tick()]
    cancels = [m for m in outs if isinstance(m, ShardCancel)]
    states = [m for m in outs if isinstance(m, JobState)]
    assert [c.assignment_id for c in cancels] == [running.assignment_id]
    assert states[-1].status.value == "failed" and states[-1].reason == "deadline passed"


def test_a_scaled_summary_says_so_and_scales_only_the_fleet(tmp_path: Path) -> None:
    """The essay demo: each emulated car stands for K cars; jobs and money stay the fleet's own."""
    from protocol.reference import equivalences

    h = Harness(tmp_path)
    h.engine.cars_per_emulated_car = 500_000
    h.car("car-a")
    h.car("car-b")
    outs = h.engine.handle(h.topics.job_submit, h.job())
    summary = h.engine.summary()
    assert summary.cars_known == 1_000_000 and summary.cars_by_hardware == {"HW5": 1_000_000}
    assert summary.tops_offered == 5e9 and equivalences(summary.tops_offered)["Fugaku"] == 11_363
    assert "each emulated car stands for 500,000 cars" in summary.scenario_scale
    assert sum(summary.jobs_by_status.values()) == 1 and outs
    assert summary.earnings_gross == h.engine.ledger.totals()["earnings_gross"]
    plain = Harness(tmp_path / "plain")
    plain.car("car-a")
    assert plain.engine.summary().scenario_scale == "" and plain.engine.summary().cars_known == 1


def test_a_gateway_heartbeat_keeps_its_quiet_cars_alive(h: Harness) -> None:
    """Many cars per connection: liveness by the gateway's heartbeat, not by each car's telemetry."""
    h.car("car-a", gateway="gw-1")
    h.car("car-b")  # its own connection, no gateway
    online = ConnectionStatus(**h.env("gw-1"), role="gateway", state=Liveness.ONLINE, vehicle_count=1)
    for _ in range(3):
        h.wall.advance(6)  # heartbeat timeout is 10 s; the gateway speaks every 6 s, the cars never
        h.send(h.topics.connection_status("gw-1"), online)
        h.engine.tick()
    assert h.engine.registry.cars["car-a"].state != "offline"
    assert h.engine.registry.cars["car-b"].state == "offline"
    h.wall.advance(11)  # the gateway falls silent: its cars time out with it
    h.engine.tick()
    assert h.engine.registry.cars["car-a"].state == "offline"


def test_a_far_future_deadline_is_rejected_not_a_crash(h: Harness) -> None:
    h.car("car-a")
    far = datetime(9999, 1, 1, tzinfo=UTC)
    outs = h.send(h.topics.job_submit, h.job(deadline=far))
    (state,) = h.states(outs)
    assert state.status == "rejected" and "ten years" in state.reason
    h.engine.tick()  # nothing was recorded that a tick could trip over


def test_a_car_is_paid_for_no_more_work_than_its_shard_held(h: Harness) -> None:
    h.car("car-a")
    h.car("car-b")
    h.send(h.topics.job_submit, h.job(shards=1, max_parallel_shards=2, redundancy=2))
    first, second = assignments(h.engine.tick())
    for a in (first, second):
        claim = result_for(h, a).model_dump()
        claim["work_tera_ops"] = 1e17  # far more than the 1,000 tera-ops of the shard
        h.send(h.topics.shards(a.vehicle_id), ShardResult.model_validate(claim))
    totals = h.ledger.totals()
    assert totals["shards_completed"] == 1 and totals["work_done"] == 2000.0


def test_progress_past_the_shards_end_is_clamped_to_it(h: Harness) -> None:
    h.car("car-a")
    h.send(h.topics.job_submit, h.job(shards=1, max_parallel_shards=1))
    (a,) = assignments(h.engine.tick())
    h.send(h.topics.shards("car-a"), ShardProgress(
        **h.env("car-a"), assignment_id=a.assignment_id, job_id=a.job_id, shard_id=a.shard_id,  # type: ignore[arg-type]
        done_tera_ops=1e17, checkpoint_tera_ops=1e17, checkpoint="far"))
    attempt = h.ledger.attempt(a.assignment_id)
    assert attempt is not None
    assert (attempt.done_tera_ops, attempt.checkpoint_tera_ops, attempt.checkpoint) == (a.work_tera_ops,) * 2 + ("far",)
