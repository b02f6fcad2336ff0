"""Helpers for tests that run `fleetroom` commands and compositions as subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


def clean_env() -> dict[str, str]:
    """This process's environment without any FLEETROOM_ setting, so a child sees only its flags."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEETROOM_")}


async def fleetroom_on(port: int, topic_prefix: str, command: str, *argv: str,
                       timeout: float = 60.0) -> tuple[int, str]:
    """Run `fleetroom COMMAND ARGV` against the broker on 127.0.0.1:port to its end: exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetroom", command, "--broker", f"mqtt://127.0.0.1:{port}",
        "--topic-prefix", topic_prefix, *argv, env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@asynccontextmanager
async def child(argv: list[str], cwd: Path, log: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A child process (stderr to `log`, a FLEETROOM_-free environment) for the block; killed if still running."""
    with open(log, "wb") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, cwd=cwd, env=clean_env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        await asyncio.to_thread(proc.wait, 10)


def fleetroom(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `python -m fleetroom ARGS` to completion."""
    return subprocess.run([sys.executable, "-m", "fleetroom", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def interrupt(proc: subprocess.Popen[str], timeout: float = 30.0) -> int:
    """Send Ctrl-C (SIGINT) and wait for the process to finish."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout)
