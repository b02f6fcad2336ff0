"""Waiting for a broker a bench started to listen on its port."""

from __future__ import annotations

import socket
import time


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
