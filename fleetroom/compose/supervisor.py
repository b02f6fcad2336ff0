"""Child processes for the demo and the load test: start, watch, restart, and stop them all.

Each child runs in its own process group (so a Ctrl-C in the terminal reaches only us, and a
stop reaches the child's own children too), writes stdout and stderr to a log file under the
run directory, and is stopped with SIGTERM, then SIGKILL if it does not leave in time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mqttlink import BROKER_ENV, BrokerUrlError, parse_broker_url

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0


class ChildDied(RuntimeError):
    """A supervised child left while it was expected to run."""

    def __init__(self, name: str, returncode: int, log_path: Path) -> None:
        super().__init__(f"{name} exited with code {returncode} (log: {log_path})")
        self.name = name
        self.returncode = returncode
        self.log_path = log_path


class NotReady(RuntimeError):
    """A child did not become ready in time."""


def fleetroom_command(*args: str) -> list[str]:
    """The command line that runs `fleetroom ARGS...` with this interpreter."""
    return [sys.executable, "-m", "fleetroom", *args]


@dataclass
class Child:
    """One supervised process and how to start it again."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    expected_down: bool = False
    starts: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the child's log, for an error message."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Supervisor:
    """Owns every child of one run; `stop_all` leaves nothing running.

    Children run in `run_dir`, so that they find no stray `.fleetroom/secret` of the caller's
    working directory: every path handed to them must be absolute.
    """

    run_dir: Path
    env: dict[str, str] | None = None
    children: dict[str, Child] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: Sequence[str]) -> Child:
        """Start (or restart) child `name` running `argv`, logging to run_dir/NAME.log."""
        child = self.children.get(name)
        if child is not None and child.running():
            raise RuntimeError(f"{name} is already running")
        if child is None:
            child = Child(name, list(argv), self.run_dir / f"{name}.log")
            self.children[name] = child
        child.argv = list(argv)
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(child.log_path, "ab") as out:
            out.write(f"--- start {time.strftime('%H:%M:%S')}: {' '.join(child.argv)}{_broker_note(env)}\n".encode())
            out.flush()
            child.process = subprocess.Popen(
                child.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=env, cwd=self.run_dir,
            )
        child.expected_down = False
        child.starts += 1
        log.info("started %s (pid %s): %s", name, child.pid, " ".join(child.argv))
        return child

    def restart(self, name: str) -> Child:
        """Stop child `name` if it runs, and start it again with the same command."""
        child = self.children[name]
        self.stop(name)
        return self.start(name, child.argv)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to child `name`'s process group and wait until it is gone (a chaos stage)."""
        child = self.children[name]
        child.expected_down = True
        if child.process is None:
            return
        _signal_group(child.process, sig)
        _wait(child.process, STOP_GRACE_S)

    def stop(self, name: str) -> None:
        """Stop child `name`: SIGTERM to its group, SIGKILL after a grace period."""
        child = self.children[name]
        child.expected_down = True
        proc = child.process
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            if not _wait(proc, STOP_GRACE_S):
                log.warning("%s did not stop on SIGTERM; killing it", name)
                _signal_group(proc, signal.SIGKILL)
                _wait(proc, STOP_GRACE_S)
        else:
            _signal_group(proc, signal.SIGKILL)  # its own children may outlive it

    def stop_all(self) -> None:
        """Stop every child; safe to call twice.

        All but the first started stop together, under one grace period (a million-car fleet and
        the dispatcher each take seconds to say goodbye; one after the other, quitting took 15 s),
        then the first (the broker, when the run started one), so their goodbyes still reach it.
        """
        names = list(self.children)
        self._stop_together(names[1:])
        self._stop_together(names[:1])

    def _stop_together(self, names: Sequence[str]) -> None:
        """SIGTERM to every group in `names` at once; SIGKILL to those still there after one grace period."""
        running: list[tuple[str, subprocess.Popen[bytes]]] = []
        for name in names:
            child = self.children[name]
            child.expected_down = True
            if child.process is None:
                continue
            if child.process.poll() is None:
                _signal_group(child.process, signal.SIGTERM)
                running.append((name, child.process))
            else:
                _signal_group(child.process, signal.SIGKILL)  # its own children may outlive it
        deadline = time.monotonic() + STOP_GRACE_S
        for name, proc in running:
            if not _wait(proc, max(0.0, deadline - time.monotonic())):
                log.warning("%s did not stop on SIGTERM; killing it", name)
                _signal_group(proc, signal.SIGKILL)
                _wait(proc, STOP_GRACE_S)

    def check(self) -> None:
        """Raise `ChildDied` if a child that should be running has left."""
        for child in self.children.values():
            if child.expected_down or child.process is None:
                continue
            code = child.process.poll()
            if code is not None:
                raise ChildDied(child.name, code, child.log_path)

    def pids(self) -> list[int]:
        """The process ids of every child ever started in this run (current incarnation)."""
        return [c.pid for c in self.children.values() if c.pid is not None]

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _broker_note(env: dict[str, str]) -> str:
    """Where $FLEETROOM_BROKER points, without its password, for a log header."""
    text = env.get(BROKER_ENV)
    if not text:
        return ""
    try:
        return f" ({BROKER_ENV}={parse_broker_url(text)})"
    except BrokerUrlError:
        return f" ({BROKER_ENV} set but not a valid URL)"


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, supervisor: Supervisor | None = None,
    interval: float = 0.05,
) -> None:
    """Block until `condition()` holds; raise `NotReady`, or `ChildDied` if a child leaves first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if supervisor is not None:
            supervisor.check()
        if time.monotonic() > deadline:
            raise NotReady(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def read_port_file(path: Path) -> int | None:
    """The port a child wrote to `path`, or None while it has not written it."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
