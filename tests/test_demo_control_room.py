"""The demo with the control room in the foreground, on a pseudo-terminal: a child that dies is
reported on screen, and quitting (ctrl+q) stops every process the demo started."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.demo_loadtest import processes_in, wait_gone

pytestmark = pytest.mark.slow


def read_until(fd: int, proc: subprocess.Popen[bytes], done: object, timeout: float) -> bytes:
    """Read the terminal until `done(seen)` holds; drain it so the app never blocks on output."""
    seen = b""
    deadline = time.monotonic() + timeout
    while not done(seen):  # type: ignore[operator]
        assert proc.poll() is None, seen[-2000:]
        assert time.monotonic() < deadline, f"timed out; screen so far: {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_quitting_the_control_room_stops_everything(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    main_fd, child_fd = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetroom", "demo", "--run-dir", str(run_dir), "--topic-prefix", "tdemotui"],
        stdin=child_fd, stdout=child_fd, stderr=child_fd, env=env, start_new_session=True,
    )
    os.close(child_fd)
    try:
        # the control room draws cars of the demo's fleet while all four processes run
        before = read_until(main_fd, proc, lambda seen: b"car-" in seen and len(processes_in(run_dir)) >= 4, 60)
        assert b"died" not in before
        # a child that dies is reported in the control room, which carries on
        driver = [pid for pid in processes_in(run_dir) if b"compose.driver" in _cmdline(pid)]
        os.kill(driver[0], signal.SIGKILL)
        read_until(main_fd, proc, lambda seen: b"died" in seen, 20)
        os.write(main_fd, b"\x11")  # ctrl+q
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([main_fd], [], [], 0.1)[0]:
                try:
                    os.read(main_fd, 65536)
                except OSError:
                    break
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main_fd)
    assert wait_gone(run_dir) == []
