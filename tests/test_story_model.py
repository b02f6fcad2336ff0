"""The essay's story in figures: fractional equivalences, the job mix's work, utilisation, faults, charts."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from fake_vehicles.catalogue import HARDWARE
from fleetroom.compose.driver import EARLY_MIX
from fleetroom.compose.jobstream import ESSAY_MIX, LIGHT_MIX, TEMPLATES, JobStream, mean_car_seconds
from fleetroom.compose.summary import faults_line, format_summary
from protocol import HardwareGeneration, JobKind
from protocol.fleet_messages import utilisation
from protocol.reference import equivalence_text, format_machines
from tests.test_demo_summary import summary
from tui.chartdata import CHARTS, chart_data

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("count", "text"),
    [(0.0, "0.00 Fugaku"), (0.1405, "0.14 Fugaku"), (1.0, "1.00 Fugaku"), (1.1363, "1.13 Fugakus"),
     (45.4545, "45.4 Fugakus"), (11_363.63, "11,363 Fugakus"), (45_454.5, "45,454 Fugakus")],
)
def test_machines_are_fractional_when_small_and_whole_when_large(count: float, text: str) -> None:
    assert format_machines(count, "Fugaku") == text


def test_a_hundred_cars_of_the_demos_early_mix_are_a_fraction_of_a_fugaku() -> None:
    """From the catalogue, not a made-up figure: 100 x (0.3 x 144 + 0.6 x 125 + 0.1 x 5,000) TOPS."""
    per_car = sum(HARDWARE[HardwareGeneration(hw)].tops * share for hw, share in EARLY_MIX.items())
    assert per_car == pytest.approx(618.2)
    assert equivalence_text(100 * per_car) == "0.14 Fugaku, 0.05 Frontier, 0.02 El Capitan"
    assert equivalence_text(100 * 5_000.0).startswith("1.13 Fugakus")  # 100 HW5 cars: 500,000 / 440,000


def test_the_essays_own_figures_are_unchanged() -> None:
    assert equivalence_text(1e6 * 5_000.0) == "11,363 Fugakus, 4,166 Frontiers, 1,820 El Capitans"
    assert equivalence_text(1e6 * 20_000.0) == "45,454 Fugakus, 16,666 Frontiers, 7,283 El Capitans"


def test_llm_inference_work_is_tokens_times_two_times_params() -> None:
    t = TEMPLATES["inference-70b"]
    assert t.work.tera_ops_per_unit == pytest.approx(2 * 70e9 / 1e12)  # 0.14 tera-ops per token
    assert t.shard_work_tera_ops == pytest.approx((30e6 * 0.14, 120e6 * 0.14))
    assert TEMPLATES["fine-tune-70b"].work.tera_ops_per_unit == pytest.approx(6 * 70e9 / 1e12)
    assert TEMPLATES["rendering-4k"].work.unit == "frame"


def test_an_essay_shard_keeps_an_hw5_car_busy_for_minutes_not_seconds() -> None:
    hw5 = HARDWARE[HardwareGeneration.HW5].tops
    for name in ESSAY_MIX:
        low, high = TEMPLATES[name].shard_work_tera_ops
        assert low / hw5 >= 10 * 60 and high / hw5 <= 60 * 60, name  # 10 to 60 simulated minutes
    # one essay job keeps cars busy for about 20 car-hours: a thousand jobs fill a million-car hour
    assert 15 * 3600 < mean_car_seconds(ESSAY_MIX, hw5) < 25 * 3600


def test_light_shards_still_fit_hw4_cars_in_minutes() -> None:
    hw4 = HARDWARE[HardwareGeneration.HW4].tops
    for name in LIGHT_MIX:
        t = TEMPLATES[name]
        if t.min_hardware is None:
            assert t.shard_work_tera_ops[1] / hw4 < 30 * 60, name


def test_the_stream_draws_jobs_whose_work_is_units_times_the_rate() -> None:
    stream = JobStream(random.Random(3), {"inference-70b": 1.0}, sender="t")
    job = stream.next(T0, T0)
    per_shard = job.total_work_tera_ops / job.shards
    tokens = per_shard / 0.14
    assert 30e6 <= tokens <= 120e6 and job.job_kind is JobKind.INFERENCE
    assert job.min_hardware is HardwareGeneration.HW5 and job.checkpoint_interval_s == 600.0


def test_utilisation_is_in_use_over_what_is_put_up_and_in_use_reads_in_fugakus() -> None:
    s = summary(1_000_000, 5e9, tops_allocated=3.4e9, tops_offered=0.6e9)
    assert utilisation(s) == pytest.approx(0.85)
    text = format_summary(s, {}, 60)
    assert "3.4 GTOPS allocated: 85% of what the parked cars offer in use" in text
    assert "in use: 7,727 Fugakus" in text


def test_each_detected_fault_has_a_counter_in_the_summary() -> None:
    s = summary(10, 5e4, wrong_results_caught=2,
                faults_detected={"shards_lost_car_silent": 3, "cars_timed_out": 1, "shards_lost_car_gone": 4})
    line = faults_line(s)
    for part in ("wrong results caught 2", "shards lost car silent 3", "cars timed out 1", "shards lost car gone 4"):
        assert part in line
    assert line in format_summary(s, {}, 10)


def test_charts_scale_units_state_their_window_and_put_time_on_x() -> None:
    tops = next(c for c in CHARTS if c.title == "TOPS")
    data = chart_data(tops, {"tops_allocated": [3.0e9, 3.5075e9], "tops_offered": [1e9, 0.5e9]}, 2.0)
    assert data.unit == "GTOPS" and data.lines["tops_allocated"] == pytest.approx([3.0, 3.5075])
    assert data.xs == [-2.0, 0.0] and data.window_s == 2.0
    assert data.heading == "TOPS (GTOPS), last 2 s: in use 3.51, offered 0.5"
    empty = chart_data(tops, {}, 1.0)
    assert empty.xs == [] and "no samples yet" in empty.heading
