"""`fleetroom loadtest --broker URL --secret-file F` against a broker that checks fleet credentials.

The dispatcher, the fleet's gateway and the harness (the operator: it submits jobs and drives
cars away) each log in under their own role; a wrong secret is one line before anything starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.demo_loadtest import clean_env, wait_gone
from tests.test_demo_secured import secured_broker_process

pytestmark = pytest.mark.slow
SECRET = "demo-fleet-secret"  # what secured_broker_process gives its broker

SCENARIO = """
name = "secured"
speed = 60
heartbeat_timeout_s = 8
[fleet]
count = 10
hardware_mix = { HW5 = 1.0 }
[jobs]
rate_per_s = 1.0
mix = { inference = 1.0 }
scale = 0.3
[[stages]]
kind = "connect_ramp"
duration_s = 2
[[stages]]
kind = "steady"
duration_s = 3
[[stages]]
kind = "drain"
timeout_s = 40
[slo]
max_jobs_lost = 0
min_jobs_completed_share = 1.0
min_cars_seen = 10
"""


def loadtest(port: int, secret_file: Path, out: Path, prefix: str) -> subprocess.CompletedProcess[str]:
    scenario = out.parent / f"{out.name}.toml"
    scenario.write_text(SCENARIO)
    argv = [sys.executable, "-m", "fleetroom", "loadtest", str(scenario), "--broker", f"mqtt://127.0.0.1:{port}",
            "--secret-file", str(secret_file), "--topic-prefix", prefix, "--out", str(out)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=150, check=False, env=clean_env(),
                          cwd=out.parent)


def test_a_load_test_runs_on_a_secured_broker_and_a_wrong_secret_is_one_line(tmp_path: Path) -> None:
    prefix = "tloadsec"
    with secured_broker_process(tmp_path, prefix) as port:
        (tmp_path / "fleet-secret").write_text(SECRET + "\n")
        result = loadtest(port, tmp_path / "fleet-secret", tmp_path / "run", prefix)
        (tmp_path / "wrong").write_text("not-the-fleet-secret\n")
        refused = loadtest(port, tmp_path / "wrong", tmp_path / "run2", prefix)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    jobs = report["jobs"]
    assert jobs["submitted"] > 0 and jobs["completed"] == jobs["submitted"] and jobs["lost"] == 0
    assert report["fleet"]["cars_seen"] == 10
    assert wait_gone(tmp_path / "run") == []
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "refused the login of 'operator'" in lines[0], lines[0]
