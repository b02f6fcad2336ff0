"""The summary's power figures on a real dispatcher run: the fleet core's cars and the engine, a real SQLite ledger.

Every message goes through the real codec both ways; the only thing missing is the broker.
What the cars draw (their own model) is integrated beside the run and compared with what
the dispatcher's summary says.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatcher.engine import Engine
from dispatcher.ledger import Ledger
from fake_vehicles.commands import CommandHandler
from fake_vehicles.fleet import Fleet, FleetConfig
from fake_vehicles.messages import Encoder
from protocol import FleetSummary, HardwareGeneration, JobSubmission, MatchPolicy, Topics, encode, hours
from protocol.clock import ManualClock
from protocol.power import HARDWARE_POWER
from protocol.topics import Channel

TOPICS = Topics("powerrun")
START = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)  # a Tuesday afternoon; local time is UTC for both
STEP_S = 30.0


class Run:
    """The fleet core and the dispatcher engine on one simulated clock, messages passed both ways."""

    def __init__(self, tmp_path: Path, count: int, mix: dict[HardwareGeneration, float] | None = None,
                 telemetry: bool = False) -> None:
        self.telemetry = telemetry  # the dispatcher subscribes to no per-car telemetry: fed only if asked
        self.t = START.timestamp()
        config = FleetConfig(seed=11, count=count, telemetry_interval_s=60.0)
        if mix is not None:
            config = FleetConfig(seed=11, count=count, telemetry_interval_s=60.0, mix=mix)
        self.fleet = Fleet(config,
                           Encoder(TOPICS, 0.0, None), random.Random(11))
        self.fleet.encoder.stamp(START, self.t)
        self.fleet.join(self.t, count)
        self.handler = CommandHandler(self.fleet, on_dispatcher_online=lambda _: None,
                                      on_gateway_status=lambda *_: None)
        self.wall = ManualClock()
        self.engine = Engine(TOPICS, Ledger(tmp_path / "ledger.sqlite"), sim_now=self.sim_now, wall=self.wall,
                             rng=random.Random(1), heartbeat_timeout_s=1e9)
        self.true_kwh = {"battery": 0.0, "grid": 0.0}

    def sim_now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def submit(self, shards: int, shard_s: float) -> None:
        job = JobSubmission(sender="operator", sent_at=START, sim_time=self.sim_now(), job_id="job-power",
                            name="power", total_work_tera_ops=shards * 5000.0 * shard_s, shards=shards,
                            min_tops_per_car=100.0, max_parallel_shards=shards)
        self.engine.handle(TOPICS.job_submit, encode(job))

    def run(self, seconds: float) -> None:
        end = self.t + seconds
        while self.t < end:
            for car in self.fleet.busy.values():  # what the cars draw over the step, by their own model
                self.true_kwh["grid" if car.charger_kw > 0 else "battery"] += car.compute_kw() * STEP_S / 3600.0
            self.t += STEP_S
            self.wall.advance(STEP_S)
            self.fleet.encoder.stamp(self.sim_now(), self.t)
            self.fleet.advance(self.t)
            self.fleet.sweep(self.t, 10_000)
            while self.fleet.outbox:
                _, channel, topic, payload = self.fleet.outbox.popleft()
                if self.telemetry or channel is not Channel.TELEMETRY:
                    self.engine.handle(topic, payload)
            for out in self.engine.tick():
                if out.topic.startswith(f"{TOPICS.root}/commands/"):  # the cars' commands; job states go elsewhere
                    self.handler.handle(out.topic, out.payload, self.t)

    def summary(self) -> FleetSummary:
        return FleetSummary.model_validate_json(encode(self.engine.summary()))  # as the control room decodes it


def test_power_and_energy_in_the_summary_match_what_the_cars_draw(tmp_path: Path) -> None:
    """Without any telemetry: power from the assignments the dispatcher runs, parked from offers and withdrawals."""
    run = Run(tmp_path, count=40)
    run.submit(shards=30, shard_s=3 * 3600.0)
    run.run(2 * 3600.0)
    s = run.summary()
    busy = list(run.fleet.busy.values())
    assert busy, "cars are computing"
    drawn_kw = sum(car.compute_kw() for car in busy)
    assert s.compute_power_kw == pytest.approx(drawn_kw, rel=0.02)
    assert s.compute_power_from_grid_kw == 0.0  # which cars sit on a charger only their telemetry says
    online = [car for car in run.fleet.cars if not car.silent]
    assert s.rated_power_kw == pytest.approx(sum(car.hardware.compute_power_kw for car in online))
    assert s.tops_total == pytest.approx(sum(car.hardware.tops for car in online))
    assert s.compute_power_kw < s.rated_power_kw
    drawn = s.energy_from_battery_kwh + s.energy_from_grid_kwh
    assert drawn == pytest.approx(sum(run.true_kwh.values()), rel=0.05)
    parked = sum(not car.driving for car in online) / len(online)
    assert s.parked_share == pytest.approx(parked, abs=0.05)
    assert run.fleet.counts[Channel.TELEMETRY] > 0 and "telemetry" not in str(s.rejections)


def test_telemetry_that_arrives_tells_which_cars_draw_from_the_grid(tmp_path: Path) -> None:
    run = Run(tmp_path, count=40, telemetry=True)
    run.submit(shards=30, shard_s=3 * 3600.0)
    run.run(2 * 3600.0)
    s = run.summary()
    busy = list(run.fleet.busy.values())
    from_grid_kw = sum(car.compute_kw() for car in busy if car.charger_kw > 0)
    assert s.compute_power_from_grid_kw == pytest.approx(from_grid_kw, rel=0.05, abs=0.01)
    assert s.energy_from_battery_kwh == pytest.approx(run.true_kwh["battery"], rel=0.1, abs=0.05)
    assert s.energy_from_grid_kwh == pytest.approx(run.true_kwh["grid"], rel=0.1, abs=0.05)


def test_hours_in_the_summary_come_from_the_owner_day_model(tmp_path: Path) -> None:
    run = Run(tmp_path, count=20)
    run.run(120.0)
    s = run.summary()
    assert s.forecast_start_hour == 13 and len(s.tops_forecast_24h) == 24
    expected = hours.forecast_tops(run.sim_now(), s.tops_total)
    assert s.tops_forecast_24h == pytest.approx(expected)
    assert s.parked_share_week_model == pytest.approx(hours.parked_share_week())
    assert len(s.parked_share_by_weekday_model) == 7


def test_the_essay_scale_multiplies_power_like_tops(tmp_path: Path) -> None:
    run = Run(tmp_path, count=10)
    run.run(120.0)
    plain = run.summary()
    run.engine.cars_per_emulated_car = 100_000
    scaled = run.summary()
    assert scaled.rated_power_kw == pytest.approx(100_000 * plain.rated_power_kw)
    assert scaled.tops_total == pytest.approx(100_000 * plain.tops_total)
    assert "power" in scaled.scenario_scale


def test_a_million_hw5_cars_draw_2_56_gw_at_full_load(tmp_path: Path) -> None:
    """The model's figure the control room sets beside the essay's 'about 100 GW' claim."""
    run = Run(tmp_path, count=10, mix={HardwareGeneration.HW5: 1.0})
    run.run(60.0)
    run.engine.cars_per_emulated_car = 100_000
    assert run.summary().rated_power_kw == pytest.approx(2.56e6)


@pytest.mark.parametrize("policy", [MatchPolicy.FASTEST, MatchPolicy.ENERGY_AWARE])
def test_the_hw6_142_kwh_bounce_on_a_real_run(tmp_path: Path, policy: MatchPolicy) -> None:
    """The incident, replayed: HW6 cars given 142 kWh shards on an afternoon bounce on pack_too_hot; the
    energy-aware policy, planning with the cars' own model, does not hand them out at all."""
    run = Run(tmp_path, count=30, mix={HardwareGeneration.HW6: 1.0})
    run.engine.offers.book.set_policy(policy)
    shard_work = 142.0 / HARDWARE_POWER[HardwareGeneration.HW6].kwh_per_tera_op
    job = JobSubmission(sender="operator", sent_at=START, sim_time=run.sim_now(), job_id="job-hot", name="hot",
                        total_work_tera_ops=4 * shard_work, shards=4, min_tops_per_car=100.0, max_parallel_shards=4)
    run.engine.handle(TOPICS.job_submit, encode(job))
    run.run(4 * 3600.0)
    summary = run.summary()
    if policy is MatchPolicy.FASTEST:
        assert run.fleet.counts["accepted"] >= 10 and summary.preemptions >= 10, "the bounce the issue saw"
    else:
        assert run.fleet.counts["accepted"] == 0 and summary.preemptions == 0
        state = run.engine.ledger.job_report("job-hot")
        assert state is not None and state.status.value == "queued"
