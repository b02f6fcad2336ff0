"""Scenario files: every shipped one parses; bad ones give one line and exit code 2."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetroom.cli import main
from fleetroom.common import clock_flags, sim_epoch
from fleetroom.loadtest.runner import sim_start_for
from fleetroom.loadtest.scenario import STAGE_KINDS, ScenarioError, load_scenario, parse_scenario
from protocol.clock import ManualClock, SimClock

SCENARIOS = sorted(Path("scenarios").glob("*.toml"))
MINIMAL = {"stages": [{"kind": "steady", "duration_s": 1}]}


def test_several_scenarios_are_shipped_and_cover_every_stage() -> None:
    assert len(SCENARIOS) >= 3
    kinds = {stage.kind for path in SCENARIOS for stage in load_scenario(path).stages}
    assert kinds == set(STAGE_KINDS)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenario_parses(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.slo, "every shipped scenario states its objectives"
    assert abs(sum(scenario.fleet.hardware_mix.values()) - 1) < 1e-9


def test_defaults_fill_a_minimal_scenario() -> None:
    scenario = parse_scenario(dict(MINIMAL), "x.toml")
    assert scenario.broker == "embedded" and scenario.speed == 60
    assert scenario.stages[0].duration_s == 1
    assert scenario.planned_s == 1


def test_drain_gets_a_default_timeout() -> None:
    scenario = parse_scenario({"stages": [{"kind": "drain"}]}, "x.toml")
    assert scenario.stages[0].params["timeout_s"] == 60.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "at least one [[stages]]"),
        ({"stages": [{"kind": "nap"}]}, "stages[0].kind: 'nap' is not one of"),
        ({"stages": [{"kind": "steady", "duration_s": "ten"}]}, "stages[0].duration_s: expected a number"),
        ({"stages": [{"kind": "steady", "share": 0.5}]}, "stages[0]: unknown key 'share'"),
        ({**MINIMAL, "speed": -1}, "x.toml: speed: -1 is outside"),
        ({**MINIMAL, "speed": float("inf")}, "x.toml: speed: inf is outside"),
        ({**MINIMAL, "jobs": {"rate_per_s": float("nan")}}, "x.toml: jobs.rate_per_s: nan is outside"),
        ({**MINIMAL, "fleet": {"count": float("inf")}}, "fleet.count: expected an integer, got inf"),
        ({**MINIMAL, "fleet": {"count": 0}}, "fleet.count: 0 is outside"),
        ({**MINIMAL, "fleet": {"hardware_mix": {"HW5": 0.5}}}, "shares must sum to 1"),
        ({**MINIMAL, "fleet": {"hardware_mix": {"HW9": 1.0}}}, "unknown key 'HW9'"),
        ({**MINIMAL, "jobs": {"mix": {"mining": 1.0}}}, "unknown key 'mining'"),
        ({**MINIMAL, "slo": {"max_happiness": 1}}, "slo: unknown key 'max_happiness'"),
        ({**MINIMAL, "broker": "rabbitmq"}, "'rabbitmq' is not one of"),
        ({**MINIMAL, "fleet": {"processes": True}}, "expected an integer"),
        ({**MINIMAL, "colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_bad_scenarios_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError, match=None) as caught:
        parse_scenario(data, "x.toml")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [("stages = [", "not valid TOML"), ("[[stages]]\nkind = 'warp'\n", "'warp' is not one of")],
)
def test_command_rejects_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["loadtest", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fleetroom loadtest: error:") and message in err
    assert len(err.splitlines()) == 1


def test_command_rejects_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read scenario" in capsys.readouterr().err


def test_external_broker_cannot_be_restarted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "scenarios/small.toml", "--broker", "mqtt://127.0.0.1:1"]) == 2
    assert "restarts the broker" in capsys.readouterr().err


def test_mass_departure_lands_on_the_departure_hour() -> None:
    scenario = parse_scenario(
        {"speed": 60, "stages": [{"kind": "steady", "duration_s": 10},
                                 {"kind": "broker_restart", "duration_s": 5, "down_s": 2},
                                 {"kind": "mass_departure", "duration_s": 5}]}, "x.toml")
    start = sim_start_for(scenario, datetime(2026, 12, 1, 3, 0, tzinfo=UTC))
    # 17 wall seconds at 60x = 17 simulated minutes before 17:00
    assert start == datetime(2026, 12, 1, 16, 43, tzinfo=UTC)


def test_a_part_started_later_on_the_runs_clock_flags_is_in_step() -> None:
    origin, epoch = datetime(2026, 12, 1, 9, 0, tzinfo=UTC), 1_800_000_000.0
    wall, unix = ManualClock(50.0), ManualClock(epoch)
    run = SimClock(60.0, origin, wall, epoch=epoch, unix=unix)
    argv = clock_flags(60.0, origin, epoch)
    flags = dict(zip(argv[::2], argv[1::2], strict=True))
    assert flags == {"--speed": "60", "--sim-start": "2026-12-01T09:00:00+00:00", "--sim-epoch": "1800000000.000"}
    wall.advance(600.0)  # a part (re)started ten wall minutes into the run, with the same flags
    unix.advance(600.0)
    part = SimClock(float(flags["--speed"]), datetime.fromisoformat(flags["--sim-start"]), ManualClock(7.0),
                    epoch=sim_epoch(flags["--sim-epoch"]), unix=unix)
    assert part.now() == run.now() == origin + timedelta(hours=10)
