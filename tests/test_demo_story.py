"""The essay demo's flags: the HW6 line is one flag away, and its job rate is computed to fill the fleet."""

from __future__ import annotations

import argparse

import pytest

from fleetroom.cli import build_parser, main
from fleetroom.commands.demo import FILL_SHARE, PARKED_SHARE, _driver_flags, _fleet_flags, essay_job_load
from fleetroom.compose.essay import MAX_ESSAY_JOB_RATE
from fleetroom.compose.jobstream import ESSAY_MIX, mean_car_seconds
from protocol import HardwareGeneration


def demo_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["demo", *argv])


def test_the_essay_job_rate_keeps_most_parked_cars_busy() -> None:
    rate, scale = essay_job_load(demo_args("--scenario", "essay", "--broker", "embedded"))
    assert scale == 1.0
    busy_cars = rate * mean_car_seconds(ESSAY_MIX, 5_000.0) / 60.0  # jobs/s x car-seconds per job / speed
    assert busy_cars == pytest.approx(FILL_SHARE * PARKED_SHARE * 2_000)
    rate6, scale6 = essay_job_load(demo_args("--scenario", "essay", "--broker", "embedded", "--hardware-mix", "HW6=1"))
    assert scale6 == 4.0 and rate6 == pytest.approx(rate)  # bigger jobs, same message load


def test_a_real_million_gets_as_many_jobs_as_the_dispatcher_keeps_up_with() -> None:
    rate, _ = essay_job_load(demo_args("--scenario", "essay", "--broker", "mosquitto"))
    assert rate == MAX_ESSAY_JOB_RATE  # 500 times the 2,000-car rate would be ~20,000 assignments a second


def test_hw6_is_one_flag_away_for_the_fleet_and_the_driver() -> None:
    args = demo_args("--scenario", "essay", "--hardware-mix", "HW6=1")
    assert args.hardware_mix == {HardwareGeneration.HW6: 1.0}
    fleet = _fleet_flags(args, [])
    assert fleet[fleet.index("--hardware-mix") + 1] == "HW6=1"

    class FakeStack:
        def broker_flags(self) -> list[str]:
            return []

    driver = _driver_flags(args, FakeStack(), [])  # type: ignore[arg-type]
    assert driver[driver.index("--job-mix") + 1] == "essay" and driver[driver.index("--job-scale") + 1] == "4"
    assert _fleet_flags(demo_args("--scenario", "essay"), [])[3] == "HW5=1"


def test_a_bad_hardware_mix_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--hardware-mix", "HW9=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--hardware-mix" in err, err
