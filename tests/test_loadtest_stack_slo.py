"""A short scenario run for real: the objectives million.toml relies on (the whole stack's peak
memory, assignment p99, offer frames missed) are measured and judged, an impossible one fails the
run; and jobs wait for `jobs.start_s`, as million.toml's wait for the end of the join."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.demo_loadtest import fleetroom, wait_gone

pytestmark = pytest.mark.slow

SCENARIO = """
name = "stack-slo"
speed = 120
broker = "embedded"
[fleet]
count = 20
mode = "gateway"
hardware_mix = { HW5 = 1.0 }
[jobs]
rate_per_s = 2.0
mix = { inference = 1.0 }
scale = 0.2
start_s = 3  # jobs flow in the steady stage only: 4 s at 2 a second
[[stages]]
kind = "connect_ramp"
duration_s = 3
[[stages]]
kind = "steady"
duration_s = 4
[slo]
max_assignment_p99_ms = 60000
max_stack_rss_mib = 0.000001  # one byte: no stack fits
max_observer_dropped = 0
max_frames_missed = 0
"""


def test_an_impossible_memory_bound_fails_the_run_and_the_figures_are_shown(tmp_path: Path) -> None:
    scenario = tmp_path / "stack-slo.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "run"
    result = fleetroom("loadtest", str(scenario), "--out", str(out), "--topic-prefix", "tslo", timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    verdicts = {v["key"]: v for v in report["objectives"]}
    rss = verdicts["max_stack_rss_mib"]
    # broker, dispatcher, fleet and the harness: Python processes of tens of MiB each
    assert not rss["passed"] and rss["measured"] > 100 and report["stack"]["peak_rss_mib"] == rss["measured"]
    assert verdicts["max_assignment_p99_ms"]["passed"] and report["assignment_latency"]["count"] > 0
    assert verdicts["max_assignment_p99_ms"]["measured"] == report["assignment_latency"]["p99_ms"]
    assert verdicts["max_frames_missed"]["passed"] and verdicts["max_observer_dropped"]["passed"]
    assert 0 < report["jobs"]["submitted"] <= 9  # none during the 3 s connect ramp (it would be about 14)
    assert "FAIL  peak resident memory of the whole stack" in result.stdout
    assert "whole stack peak memory" in result.stdout
    assert wait_gone(out) == []
