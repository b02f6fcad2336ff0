"""Bad flags and files give one line on stderr and exit code 2, never a traceback; and the
demo's and load test's children get the broker password through the environment, not argv."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from fleetroom.commands.demo import _driver_flags
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


@pytest.mark.parametrize(("file_line", "phrase"), [
    ('deadline_s = "soon"', "deadline_s must be a number"),
    ("deadline_s = 1e300", "deadline_s must be within"),
    ("deadline_s = nan", "deadline_s must be a finite number"),
    ("deadline_s = -5", "deadline_s must be within"),
    ("price_cap = inf", "price_cap must be a finite number"),
])
def test_submit_bad_job_file(tmp_path: Path, file_line: str, phrase: str) -> None:
    (tmp_path / "job.toml").write_text(JOB + file_line + "\n")
    result = run_cli(["submit", "--broker", NOWHERE, "--file", "job.toml"], tmp_path)
    assert_one_line_error(result, phrase)


@pytest.mark.parametrize(("command", "flags", "phrase"), [
    (SUBMIT, ["--deadline-s", "1e300"], "deadline_s must be within"),
    (SUBMIT, ["--deadline-s", "inf"], "deadline_s must be a finite number"),
    (SUBMIT, ["--work", "inf"], "work must be a finite number"),
    (VEHICLES, ["--speed", "inf"], "--speed must be"),
    (VEHICLES, ["--speed", "nan"], "--speed must be"),
    (VEHICLES, ["--telemetry-interval", "inf"], "--telemetry-interval must be"),
    (VEHICLES, ["--grow-over", "nan"], "--grow-over must be"),
    (VEHICLES, ["--duration", "inf"], "--duration must be"),
    (VEHICLES, ["--sim-start", "9999-12-31T23:59+00:00"], "--sim-start"),
    (VEHICLES, ["--sim-epoch", "nan"], "--sim-epoch: 'nan' is not a Unix time"),
    (VEHICLES, ["--sim-epoch", "1e20"], "--sim-epoch: '1e20' is not a Unix time"),
    (DEMO, ["--speed", "inf"], "--speed must be a finite number"),
    (DEMO, ["--speed", "nan"], "--speed must be a finite number"),
    (DEMO, ["--duration", "inf"], "--duration must be a finite number"),
    (DEMO, ["--grow-over", "nan"], "--grow-over must be a finite number"),
    (DEMO, ["--job-rate", "inf"], "--job-rate must be a finite number"),
    (DEMO, ["--speed", "1e300"], "--speed must be at most"),
    (DEMO, ["--run-dir", "/proc/nope"], "cannot use --run-dir /proc/nope"),
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
                                  grow_over=10.0)
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
