"""A Mosquitto of a bench's own: a free port on 127.0.0.1, the process started, and the wait for it to listen."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from fleetroom.compose.stack import free_port

__all__ = ["free_port", "launch_mosquitto", "wait_listening"]


def wait_listening(port: int, what: str = "the broker", timeout: float = 10.0) -> None:
    """Return once 127.0.0.1:`port` accepts a connection; exit with one line if it does not in `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a port that is not open yet
    raise SystemExit(f"{what} on port {port} did not start within {timeout:.0f} s")


def launch_mosquitto(conf: Path, port: int, timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Mosquitto on `conf` (whose listener is 127.0.0.1:`port`), returned once it listens; killed if it does not."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, "mosquitto", timeout)
    except SystemExit:
        proc.kill()
        raise
    return proc
