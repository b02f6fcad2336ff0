"""Helpers for tests that run whole `fleetroom` compositions as subprocesses (demo, loadtest)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is `directory` (every supervised child runs there)."""
    target = str(directory.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") == target and _state(entry) != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _state(entry: Path) -> str:
    return (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_gone(directory: Path, timeout: float = 10.0) -> list[int]:
    """Wait until no process runs in `directory`; return those still there after `timeout`."""
    deadline = time.monotonic() + timeout
    while (left := processes_in(directory)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def fleetroom(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `python -m fleetroom ARGS` to completion."""
    return subprocess.run([sys.executable, "-m", "fleetroom", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def interrupt(proc: subprocess.Popen[str], timeout: float = 30.0) -> int:
    """Send Ctrl-C (SIGINT) and wait for the process to finish."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout)
