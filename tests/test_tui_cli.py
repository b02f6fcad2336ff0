"""`fleetroom tui` at the command line: one-line errors with exit code 2, and a clean quit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from protocol import Topics
from tests.support.brokers import TestBroker, free_port
from tests.support.waiting import wait_until
from tui.app import FleetroomApp


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetroom", "tui", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=None)


def test_an_unreachable_broker_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("--broker", f"mqtt://127.0.0.1:{free_port()}", "--log-file", str(tmp_path / "tui.log"),
                     cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleetroom tui: error: cannot reach the MQTT broker")
    assert "Traceback" not in result.stderr


def test_a_bad_broker_url_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("--broker", "http://nowhere", "--log-file", str(tmp_path / "tui.log"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("fleetroom tui: error: bad broker URL")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_q_and_ctrl_c_quit_cleanly(amqtt_broker: TestBroker, topics: Topics) -> None:
    for key in ("q", "ctrl+c"):
        app = FleetroomApp(amqtt_broker.url(), topics, refresh_s=0.05)
        async with app.run_test() as pilot:
            await wait_until(lambda app=app: app.store.link.state == "connected", what="the control room to connect")
            await pilot.press(key)
            await wait_until(lambda app=app: not app.is_running, what=f"{key} to quit")
        assert app.return_code in (0, None)
