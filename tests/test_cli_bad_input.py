"""Bad flags and files give one line on stderr and exit code 2, never a traceback; and the
demo's and load test's children get the broker password through the environment, not argv."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from fleetroom.cli import build_parser
from fleetroom.commands.demo import _driver_flags
from fleetroom.common import FiniteRange, finite, whole
from fleetroom.compose.stack import Stack
from fleetroom.compose.supervisor import Supervisor, wait_for
from mqttlink import BROKER_ENV, BrokerUrl, parse_broker_url

ROOT = Path(__file__).resolve().parent.parent

NOWHERE = "mqtt://127.0.0.1:1"
JOB = 'name = "j"\nwork = 1.0\nshards = 1\nmin_tops = 1.0\n'
SUBMIT = ["submit", "--broker", NOWHERE, "--name", "j", "--work", "1", "--shards", "1", "--min-tops", "1"]
VEHICLES = ["vehicles", "--broker", NOWHERE, "--count", "1", "--duration", "1"]
DEMO = ["demo", "--headless", "--duration", "1", "--broker", NOWHERE]


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetroom", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], phrase: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert phrase in lines[0], lines[0]


DEADLINE = "job.toml: deadline_s: must be a number above 0 and at most 3.15576e+08, not"


@pytest.mark.parametrize(("file_line", "phrase"), [
    ('deadline_s = "soon"', f"{DEADLINE} 'soon'"),
    ("deadline_s = 1e300", f"{DEADLINE} 1e+300"),
    ("deadline_s = nan", f"{DEADLINE} nan"),
    ("deadline_s = -5", f"{DEADLINE} -5"),
    ("price_cap = inf", "job.toml: price_cap: must be a number within 0..1e+06, not inf"),
    ("parallel = 2.5", "job.toml: parallel: must be a whole number within 1..100000, not 2.5"),
    ('kind = "mining"', "job.toml: kind: 'mining' is not one of inference, training, rendering, other"),
    ("colour = 1", "job.toml: unknown key 'colour'"),
])
def test_submit_bad_job_file(tmp_path: Path, file_line: str, phrase: str) -> None:
    (tmp_path / "job.toml").write_text(JOB + file_line + "\n")
    result = run_cli(["submit", "--broker", NOWHERE, "--file", "job.toml"], tmp_path)
    assert_one_line_error(result, f"fleetroom submit: error: {phrase}")


def test_submit_json_job_file_with_two_problems_gives_two_lines(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text('{"name": "j", "work": -1, "shards": 1, "min_tops": 1, "priority": 101}')
    result = run_cli(["submit", "--broker", NOWHERE, "--file", "job.json"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "fleetroom submit: error: job.json: work: must be a number above 0 and at most 1e+18, not -1",
        "fleetroom submit: error: job.json: priority: must be a whole number within -100..100, not 101",
    ]


SPEED = "--speed: must be a number above 0 and at most 1e+06, not"


@pytest.mark.parametrize(("command", "flags", "phrase"), [
    (SUBMIT, ["--deadline-s", "1e300"], "argument --deadline-s: must be a number above 0 and at most 3.15576e+08"),
    (SUBMIT, ["--deadline-s", "inf"], "argument --deadline-s: must be a number above 0"),
    (SUBMIT, ["--work", "inf"], "argument --work: must be a number above 0 and at most 1e+18, not 'inf'"),
    (SUBMIT, ["--shards", "two"], "argument --shards: must be a whole number within 1..100000, not 'two'"),
    (VEHICLES, ["--speed", "inf"], f"argument {SPEED} 'inf'"),
    (VEHICLES, ["--speed", "nan"], f"argument {SPEED} 'nan'"),
    (VEHICLES, ["--telemetry-interval", "inf"], "argument --telemetry-interval: must be a number above 0"),
    (VEHICLES, ["--grow-over", "nan"], "argument --grow-over: must be a number within 0..3.1536e+08, not 'nan'"),
    (VEHICLES, ["--duration", "inf"], "argument --duration: must be a number above 0"),
    (VEHICLES, ["--count", "0"], "argument --count: must be a whole number within 1..10000000, not '0'"),
    (VEHICLES, ["--faulty-share", "1.5"], "argument --faulty-share: must be a number within 0..1, not '1.5'"),
    (VEHICLES, ["--grow-to", "0"], "argument --grow-to: must be a whole number"),
    (VEHICLES, ["--grow-to", "1", "--count", "2"], "--grow-to must be at least --count"),
    (VEHICLES, ["--sim-start", "9999-12-31T23:59+00:00"], "--sim-start"),
    (VEHICLES, ["--sim-epoch", "nan"], "argument --sim-epoch: must be a Unix time in seconds above 0"),
    (VEHICLES, ["--sim-epoch", "1e20"], "argument --sim-epoch: must be a Unix time in seconds above 0"),
    (DEMO, ["--speed", "inf"], f"argument {SPEED} 'inf'"),
    (DEMO, ["--speed", "nan"], f"argument {SPEED} 'nan'"),
    (DEMO, ["--speed", "1e300"], f"argument {SPEED} '1e300'"),
    (DEMO, ["--duration", "inf"], "argument --duration: must be a number within 0..3.1536e+08, not 'inf'"),
    (DEMO, ["--grow-over", "nan"], "argument --grow-over: must be a number above 0"),
    (DEMO, ["--job-rate", "inf"], "argument --job-rate: must be a number within 0..10000, not 'inf'"),
    (DEMO, ["--cars", "0"], "argument --cars: must be a whole number within 1..10000000"),
    (DEMO, ["--scenario", "essay", "--emulate", "3"], "--emulate must divide 1,000,000"),
    (DEMO, ["--run-dir", "/proc/nope"], "cannot use --run-dir /proc/nope"),
    (["dispatcher", "--broker", NOWHERE], ["--spot-check-rate", "2"], "argument --spot-check-rate: must be"),
    (["dispatcher", "--broker", NOWHERE], ["--heartbeat-timeout", "0"], "argument --heartbeat-timeout: must be"),
    (["broker"], ["--port", "65536"], "argument --port: must be a whole number within 0..65535, not '65536'"),
    (["loadtest", str(ROOT / "scenarios" / "small.toml")], ["--fleet-processes", "0"],
     "argument --fleet-processes: must be"),
])
def test_bad_numbers_and_paths(tmp_path: Path, command: list[str], flags: list[str], phrase: str) -> None:
    assert_one_line_error(run_cli([*command, *flags], tmp_path), phrase)


def test_broker_port_file_in_a_missing_directory(tmp_path: Path) -> None:
    result = run_cli(["broker", "--anonymous", "--port", "0", "--port-file", "/proc/nope/x"], tmp_path)
    assert_one_line_error(result, "cannot write --port-file /proc/nope/x")


def test_mosquitto_config_needs_a_fixed_port(tmp_path: Path) -> None:
    result = run_cli(["broker", "--write-mosquitto-config", "conf", "--port", "0",
                      "--secret-file", str(tmp_path / "secret")], tmp_path)
    assert_one_line_error(result, "mosquitto needs a fixed port")
    assert not (tmp_path / "conf").exists()


def test_children_get_the_broker_password_only_through_the_environment(tmp_path: Path) -> None:
    url = BrokerUrl("127.0.0.1", 1, "operator", "s3cret-pw")
    with Supervisor(tmp_path) as supervisor:
        stack = Stack(supervisor, "fleetroom")
        stack.use_external(url)
        flags = stack.broker_flags()
        args = argparse.Namespace(scenario="grow", grow_to=10, speed=60.0, seed=1, job_rate=0.5, cars=2,
                                  grow_over=10.0, hardware_mix=None)
        driver = _driver_flags(args, stack, ["--sim-start", "2026-11-30T10:00+00:00"])
        assert "s3cret-pw" not in " ".join([*flags, *driver])
        code = "import os, pathlib; pathlib.Path('seen').write_text(os.environ['FLEETROOM_BROKER'])"
        supervisor.start("probe", [sys.executable, "-c", code, *flags])
        wait_for((tmp_path / "seen").exists, 20, "the probe", supervisor)
        wait_for(lambda: bool((tmp_path / "seen").read_text()), 20, "the probe", supervisor)
    assert parse_broker_url((tmp_path / "seen").read_text()) == url
    header = (tmp_path / "probe.log").read_text()
    assert "s3cret-pw" not in header
    assert f"{BROKER_ENV}=mqtt://operator@127.0.0.1:1" in header


def test_driver_reads_the_broker_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetroom.compose.driver import parse_args

    monkeypatch.setenv(BROKER_ENV, "mqtt://operator:pw@127.0.0.1:1884")
    args = parse_args(["--sim-start", "2026-11-30T10:00+00:00"])
    assert args.broker_url == BrokerUrl("127.0.0.1", 1884, "operator", "pw")


def test_loadtest_output_directory_that_cannot_be_made(tmp_path: Path) -> None:
    result = run_cli(["loadtest", str(ROOT / "scenarios" / "small.toml"), "--out", "/proc/no-such-dir/run"], tmp_path)
    assert_one_line_error(result, "cannot use --out")


def _flags(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Every option of every command, nested sub-commands included, with the command's name."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _flags(sub)
        elif action.option_strings:
            found.append((parser.prog, action))
    return found


def test_every_numeric_flag_has_a_finite_range_type() -> None:
    plain = (argparse._CountAction, argparse._StoreConstAction, argparse._HelpAction, argparse._AppendAction)
    numeric = [(prog, action) for prog, action in _flags(build_parser()) if not isinstance(action, plain)
               and (action.type in (int, float) or isinstance(action.type, FiniteRange)
                    or type(action.default) in (int, float))]
    assert len(numeric) > 30
    for prog, action in numeric:
        assert isinstance(action.type, FiniteRange), f"{prog} {action.option_strings[0]} has type {action.type}"
        if action.default is not None:  # the default itself is in range
            assert action.type.check(action.default) == action.default, (prog, action.option_strings)


@pytest.mark.parametrize(("flag_type", "text", "value"), [
    (finite(0, 1), "0", 0.0), (finite(0, 1), "1", 1.0), (finite(0, 1, above=True), "1e-9", 1e-9),
    (whole(-5, 5), "-5", -5), (whole(0, 2**63), str(2**63), 2**63),
])
def test_a_finite_range_accepts_its_bounds(flag_type: FiniteRange, text: str, value: float) -> None:
    assert flag_type(text) == value and type(flag_type(text)) is type(value)


@pytest.mark.parametrize(("flag_type", "text"), [
    (finite(0, 1), "-0.001"), (finite(0, 1), "1.001"), (finite(0, 1, above=True), "0"), (finite(0, 1), "nan"),
    (finite(-1e300, 1e300), "inf"), (finite(-1e300, 1e300), "-inf"), (finite(0, 1), "1e999"), (finite(0, 1), ""),
    (whole(0, 10), "2.0"), (whole(0, 10), "1e1"), (whole(0, 10), "11"), (whole(0, 10), "9" * 5000),
])
def test_a_finite_range_refuses_the_rest_in_words_that_say_the_range(flag_type: FiniteRange, text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        flag_type(text)
    assert str(caught.value).startswith(f"must be {flag_type.describe()}, not ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", [True, "1", None, 1.5, float("nan"), 10**400])
def test_a_file_value_is_checked_by_the_same_type(value: object) -> None:
    with pytest.raises(ValueError, match=r"^must be a whole number within 0\.\.10, not "):
        whole(0, 10).check(value)
