"""The headless demo end to end: real broker, dispatcher, fleet and driver processes.

It must show cars, offers, assignments and completed shards in its summary within seconds, and
leave nothing running, whether it ends by itself or by Ctrl-C.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.demo_loadtest import fleetroom, interrupt, processes_in, wait_gone

pytestmark = pytest.mark.slow


def number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return int(match.group(1).replace(",", ""))


def test_headless_demo_shows_the_fleet_working(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = fleetroom("demo", "--headless", "--duration", "10", "--cars", "30", "--grow-to", "60",
                       "--grow-over", "8", "--job-rate", "2", "--speed", "120", "--run-dir", str(run_dir),
                       "--topic-prefix", "tdemo", timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert number(r"cars: ([\d,]+) known", out) >= 30
    assert number(r"([\d,]+) offers", out) > 0
    assert number(r"([\d,]+) assignments", out) > 0
    assert number(r"shards completed: ([\d,]+)", out) > 0
    assert "Fugaku" in out and "int8" in out
    assert wait_gone(run_dir) == []
    for name in ("broker", "dispatcher", "fleet", "driver"):
        assert (run_dir / f"{name}.log").exists()


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetroom", "demo", "--headless", "--duration", "300", "--run-dir", str(run_dir),
         "--topic-prefix", "tdemo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        logs = [run_dir / f"{name}.log" for name in ("broker", "dispatcher", "fleet", "driver")]
        deadline = time.monotonic() + 60
        while not (all(p.exists() for p in logs) and len(processes_in(run_dir)) >= 4):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the demo's four processes did not start"
            time.sleep(0.1)
        interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_gone(run_dir) == []
