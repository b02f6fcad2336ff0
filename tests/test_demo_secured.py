"""`fleetroom demo --broker URL` against a broker that checks fleet credentials.

Every part logs in under its own role with a password derived from the fleet secret: the
dispatcher, the fleet's gateway, the driver (operator) and the demo's own reader (observer).
A login the broker refuses is one line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fleetroom.compose.supervisor import read_port_file, wait_for
from protocol.topics import Topics
from tests.support.brokers import mosquitto_broker
from tests.support.demo_loadtest import clean_env, wait_gone
from tests.test_demo_headless import number

pytestmark = pytest.mark.slow
SECRET = "demo-fleet-secret"
SEED = 1  # the demo's default: its fleet logs in as gw-1-0-1


@contextmanager
def secured_broker_process(tmp_path: Path, prefix: str) -> Iterator[int]:
    """`fleetroom broker` with a secret file, as its own process; yields its port."""
    port_file, secret_file = tmp_path / "broker.port", tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    with open(tmp_path / "broker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleetroom", "broker", "--port", "0", "--port-file", str(port_file),
             "--secret-file", str(secret_file), "--topic-prefix", prefix],
            stdout=log, stderr=log, cwd=tmp_path, env=clean_env(),
        )
    try:
        def listening() -> bool:
            assert proc.poll() is None, (tmp_path / "broker.log").read_text()
            return read_port_file(port_file) is not None

        wait_for(listening, 30, "the broker's port file")
        yield int(port_file.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def demo(port: int, secret: Path | str, run_dir: Path, prefix: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the demo with the secret in a file (a Path) or in $FLEETROOM_SECRET (a str)."""
    env = clean_env()
    if isinstance(secret, Path):
        extra = ("--secret-file", str(secret), *extra)
    else:
        env["FLEETROOM_SECRET"] = secret
    argv = [sys.executable, "-m", "fleetroom", "demo", "--broker", f"mqtt://127.0.0.1:{port}",
            "--topic-prefix", prefix, "--run-dir", str(run_dir), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env,
                          cwd=run_dir.parent)


HEADLESS = ("--headless", "--duration", "10", "--cars", "20", "--grow-to", "30", "--grow-over", "5",
            "--job-rate", "2", "--speed", "120")


def assert_worked(result: subprocess.CompletedProcess[str], run_dir: Path) -> None:
    assert result.returncode == 0, result.stderr[-2000:] + _logs(run_dir)
    out = result.stdout
    assert number(r"cars: ([\d,]+) known", out) >= 20, out
    assert number(r"([\d,]+) assignments", out) > 0, out
    assert number(r"shards completed: ([\d,]+)", out) > 0, out
    assert "Traceback" not in result.stderr
    assert wait_gone(run_dir) == []


def _logs(run_dir: Path) -> str:
    return "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(run_dir.glob("*.log")))


def test_the_headless_demo_runs_on_a_secured_embedded_broker(tmp_path: Path) -> None:
    prefix = "tdemosec"
    with secured_broker_process(tmp_path, prefix) as port:
        result = demo(port, SECRET, tmp_path / "run", prefix, *HEADLESS)  # in $FLEETROOM_SECRET
        assert_worked(result, tmp_path / "run")
        (tmp_path / "wrong").write_text("not-the-fleet-secret\n")
        refused = demo(port, tmp_path / "wrong", tmp_path / "run2", prefix, *HEADLESS)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert re.match(r"fleetroom demo: error: the MQTT broker at mqtt://observer@127\.0\.0\.1:\d+ refused the "
                    r"login of 'observer'", lines[0]), lines[0]
    assert wait_gone(tmp_path / "run2") == []


async def test_the_headless_demo_runs_on_a_secured_mosquitto(tmp_path: Path) -> None:
    topics = Topics("tdemomq")
    (tmp_path / "secret").write_text(SECRET + "\n")
    async with mosquitto_broker(topics, tmp_path / "mosquitto", SECRET.encode()) as broker:
        result = await asyncio.to_thread(demo, broker.port, tmp_path / "secret", tmp_path / "run", topics.prefix,
                                         *HEADLESS)
    assert_worked(result, tmp_path / "run")
