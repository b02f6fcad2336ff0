"""Scenario files: every shipped one parses; bad ones give one line and exit code 2."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetroom.cli import main
from fleetroom.common import clock_flags, sim_epoch
from fleetroom.loadtest.runner import sim_start_for
from fleetroom.loadtest.scenario import (
    STAGE_KINDS,
    DispatcherKill,
    Drain,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
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
    assert isinstance(scenario.stages[0], Drain)
    assert scenario.stages[0].timeout_s == 60.0 and scenario.planned_s == 60.0


def test_an_outage_without_down_s_is_planned_as_long_as_it_lasts() -> None:
    """One default for `down_s`: the plan (and so the departure hour) counts what the runner holds."""
    scenario = parse_scenario({"speed": 60, "stages": [{"kind": "dispatcher_kill", "duration_s": 5},
                                                       {"kind": "mass_departure", "duration_s": 5}]}, "x.toml")
    outage = scenario.stages[0]
    assert isinstance(outage, DispatcherKill) and outage.down_s == 1.0
    assert scenario.planned_s == 5 + 1 + 5
    start = sim_start_for(scenario, datetime(2026, 12, 1, 3, 0, tzinfo=UTC))
    assert start == datetime(2026, 12, 1, 17, 0, tzinfo=UTC) - timedelta(minutes=6)  # 6 wall s at 60x


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "x.toml: stages: needs at least one [[stages]]"),
        ({"stages": []}, "x.toml: stages: needs at least one [[stages]]"),
        ({"stages": [{"kind": "nap"}]}, "x.toml: stages[0].kind: 'nap' is not one of connect_ramp, steady,"),
        ({"stages": [{"duration_s": 1}]}, "x.toml: stages[0].kind: missing"),
        ({"stages": [{"kind": "steady", "duration_s": "ten"}]},
         "x.toml: stages[0].duration_s: must be a number within 0..86400, not 'ten'"),
        ({"stages": [{"kind": "steady", "share": 0.5}]}, "x.toml: stages[0]: unknown key 'share'"),
        ({"stages": [{"kind": "drain", "duration_s": 5}]}, "x.toml: stages[0]: unknown key 'duration_s'"),
        ({"stages": [{"kind": "broker_restart", "down_s": -1}]}, "x.toml: stages[0].down_s: must be a number"),
        ({"stages": ["steady"]}, "x.toml: stages[0]: expected a table, got 'steady'"),
        ({**MINIMAL, "speed": -1}, "x.toml: speed: must be a number within 0.01..100000, not -1"),
        ({**MINIMAL, "speed": float("inf")}, "x.toml: speed: must be a number within 0.01..100000, not inf"),
        ({**MINIMAL, "jobs": {"rate_per_s": float("nan")}}, "x.toml: jobs.rate_per_s: must be a number within"),
        ({**MINIMAL, "fleet": {"count": float("inf")}}, "x.toml: fleet.count: must be a whole number within"),
        ({**MINIMAL, "fleet": {"count": 0}}, "x.toml: fleet.count: must be a whole number within 1..2000000, not 0"),
        ({**MINIMAL, "fleet": {"count": 2.0}}, "x.toml: fleet.count: must be a whole number within 1..2000000"),
        ({**MINIMAL, "fleet": {"hardware_mix": {"HW5": 0.5}}}, "x.toml: fleet.hardware_mix: shares must sum to 1"),
        ({**MINIMAL, "fleet": {"hardware_mix": {"HW9": 1.0}}}, "x.toml: fleet.hardware_mix: unknown key 'HW9'"),
        ({**MINIMAL, "jobs": {"mix": {"mining": 1.0}}}, "x.toml: jobs.mix: unknown key 'mining'"),
        ({**MINIMAL, "jobs": {"start_s": -5}}, "x.toml: jobs.start_s: must be a number within 0..86400, not -5"),
        ({**MINIMAL, "jobs": 3}, "x.toml: jobs: expected a table, got 3"),
        ({**MINIMAL, "slo": {"max_happiness": 1}}, "x.toml: slo: unknown key 'max_happiness'"),
        ({**MINIMAL, "broker": "rabbitmq"}, "x.toml: broker: 'rabbitmq' is not one of embedded, mosquitto"),
        ({**MINIMAL, "fleet": {"processes": True}}, "x.toml: fleet.processes: must be a whole number"),
        ({**MINIMAL, "colour": "red"}, "x.toml: unknown key 'colour'"),
        ({"fleet": {"count": 10}, "stages": [{"kind": "connect_ramp", "grow_to": 5}]},
         "x.toml: a connect_ramp's grow_to (5) is below fleet.count (10)"),
        ({"stages": [{"kind": "faulty_cars", "count": 0}]}, "x.toml: stages[0].count: must be a whole number"),
    ],
)
def test_bad_scenarios_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data, "x.toml")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_every_problem_is_one_line_naming_the_file_and_the_key() -> None:
    data = {"speed": 0, "colour": "red", "fleet": {"count": 0, "mode": "bus"},
            "stages": [{"kind": "steady"}, {"kind": "nap"}]}
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data, "x.toml")
    assert [line.split(": ")[1] for line in caught.value.problems] == [
        "speed", "fleet.count", "fleet.mode", "stages[1].kind", "unknown key 'colour'"]
    assert str(caught.value).splitlines() == caught.value.problems
    assert all(line.startswith("x.toml: ") for line in caught.value.problems)


@pytest.mark.parametrize(
    ("text", "message"),
    [("stages = [", "bad.toml is not valid TOML"),
     ("[[stages]]\nkind = 'warp'\n", "stages[0].kind: 'warp' is not one of")],
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


def test_command_prints_each_problem_on_its_own_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("speed = 0\n[[stages]]\nkind = 'warp'\n")
    assert main(["loadtest", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"fleetroom loadtest: error: {path}: speed: must be a number within 0.01..100000, not 0",
        f"fleetroom loadtest: error: {path}: stages[0].kind: 'warp' is not one of connect_ramp, steady, "
        "reconnect_storm, mass_departure, broker_restart, dispatcher_kill, faulty_cars, drain",
    ]


def test_fleet_processes_flag_is_range_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "scenarios/small.toml", "--fleet-processes", "65", "--out", str(tmp_path)]) == 2
    assert "argument --fleet-processes: must be a whole number within 1..64, not '65'" in capsys.readouterr().err


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
