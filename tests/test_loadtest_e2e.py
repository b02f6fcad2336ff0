"""A small scenario end to end, broker restart included: its objectives pass and no job is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.demo_loadtest import fleetroom, processes_in, wait_gone

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("broker", "processes"), [("embedded", 1), pytest.param("mosquitto", 2, marks=pytest.mark.mosquitto)]
)
def test_small_scenario_survives_a_broker_restart_and_loses_no_job(tmp_path: Path, broker: str, processes: int) -> None:
    """The CI scenario (its stages include a broker restart) on the embedded broker with one fleet
    process, and on mosquitto with the fleet over two. After the restart the fleet may reconnect
    before the dispatcher; it then announces its cars again when the dispatcher comes online."""
    out = tmp_path / "run"
    result = fleetroom("loadtest", "scenarios/small.toml", "--out", str(out), "--topic-prefix", "tload",
                       "--broker-kind", broker, "--fleet-processes", str(processes), timeout=150)
    report = json.loads((out / "report.json").read_text())
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert report["passed"] is True
    assert [s["kind"] for s in report["stages"]] == ["connect_ramp", "steady", "broker_restart", "drain"]
    jobs = report["jobs"]
    assert jobs["submitted"] > 0 and jobs["lost"] == 0 and jobs["completed"] == jobs["submitted"]
    assert report["counters"]["observer_reconnects"] >= 1  # the broker really went away
    assert report["latency"]["count"] > 0 and report["assignment_latency"]["count"] > 0
    assert "PASS" in result.stdout and (out / "report.md").exists() and (out / "latency.svg").exists()
    assert "conn " in result.stderr and "recv " in result.stderr  # live counters
    assert report["broker"] == broker and report["fleet_processes"] == processes
    assert report["fleet"]["cars_seen"] == 30  # the two processes split the fleet without overlap
    assert wait_gone(out) == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_dying_fleet_aborts_the_run_with_a_report_and_nothing_left(tmp_path: Path) -> None:
    scenario = tmp_path / "short.toml"
    scenario.write_text('[fleet]\ncount = 5\n[[stages]]\nkind = "steady"\nduration_s = 60\n')
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fleetroom", "loadtest", str(scenario), "--out", str(out),
                             "--topic-prefix", "tabort"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (fleet := [pid for pid in processes_in(out) if b"vehicles" in _cmdline(pid)]):
            assert proc.poll() is None and time.monotonic() < deadline, "the fleet process never started"
            time.sleep(0.1)
        os.kill(fleet[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "aborted: fleet-0 exited with code -9" in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["aborted"] and report["passed"] is False
    assert wait_gone(out) == []
