"""`fleetroom tui` at the command line: one-line errors with exit code 2, and a clean quit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from fleetroom.cli import build_parser
from fleetroom.common import broker_for, topics_from
from mqttlink import make_client, new_client_id
from protocol import MatchPolicy, Topics, decode
from tests.support.brokers import TestBroker, free_port
from tests.support.control_room import dispatcher_status, job_state
from tests.support.waiting import wait_until
from tests.test_tui_app import send
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
        assert app.return_code == 0, f"{key} left the app with return code {app.return_code}"


async def test_operator_and_observer_log_in_with_fleet_credentials(secure_broker: TestBroker, topics: Topics,
                                                                   tmp_path: Path) -> None:
    """The command line's credentials (broker_for + secret file) get both roles in on amqtt and mosquitto."""
    assert secure_broker.secret is not None
    secret_file = tmp_path / "secret"
    secret_file.write_text(secure_broker.secret.decode() + "\n")
    argv = ["tui", "--broker", f"mqtt://127.0.0.1:{secure_broker.port}", "--secret-file", str(secret_file),
            "--topic-prefix", topics.prefix]
    args = build_parser().parse_args(argv)
    operator = FleetroomApp(broker_for(args, "operator"), topics_from(args), refresh_s=0.05)
    observer = FleetroomApp(broker_for(args, "observer"), topics_from(args), read_only=True, refresh_s=0.05)
    async with make_client(secure_broker.url("dispatcher"), new_client_id("dispatcher")) as dispatcher, \
            operator.run_test() as pilot, observer.run_test():
        await dispatcher.subscribe(topics.job_submit, qos=1)
        await wait_until(lambda: operator.ready and observer.ready,
                         what="both control rooms to log in")
        await send(dispatcher, topics.connection_status("dispatcher"), dispatcher_status(), retain=True)
        await send(dispatcher, topics.job_state("job-1"), job_state("job-1"))
        await wait_until(lambda: "job-1" in observer.store.jobs.rows and "job-1" in operator.store.jobs.rows,
                         what="both to read the dispatcher's job state")
        await wait_until(lambda: operator.store.dispatcher_online, what="the dispatcher's online status")
        await operator.set_policy(MatchPolicy.CHEAPEST)  # allowed for operator on control/#
        await pilot.press("ctrl+n")
        await pilot.click("#form-submit")
        async with asyncio.timeout(10):
            message = await anext(aiter(dispatcher.messages))
    assert operator.store.link.state == observer.store.link.state == "connected"
    assert isinstance(message.payload, bytes) and decode(message.payload).kind == "job_submit"
    assert operator.store.rejected_total == 0 and operator.published and not observer.published
