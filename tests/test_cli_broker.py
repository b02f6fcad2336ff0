"""`fleetroom broker` as a user runs it: a real process, clean errors, Mosquitto files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mqttlink import BrokerUnreachable, BrokerUrl, check_broker
from protocol.identity import client_id_for, derive_password
from tests.support import brokers
from tests.support.brokers import MosquittoProcess, free_port, require_mosquitto
from tests.support.waiting import wait_until


def fleetroom(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetroom", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["broker", "--port", "70000"], "argument --port: must be a whole number within 0..65535, not '70000'"),
        (["broker", "--port", "x"], "argument --port: must be a whole number within 0..65535, not 'x'"),
        (["broker", "--topic-prefix", "Bad/Prefix", "--anonymous", "--port", "0"], "bad --topic-prefix"),
        (["broker", "--secret-file", ".", "--port", "0"], "cannot read secret file"),
        (["broker", "--secret-file", "empty", "--port", "0"], "secret file empty is empty"),
        (["broker", "--secret-file", "/proc/no-such-dir/secret", "--port", "0"], "cannot create secret file"),
        (["broker", "--write-mosquitto-config", "conf", "--user", "Bad Name"], "not a car or gateway user name"),
        (["broker", "--write-mosquitto-config", "conf", "--user", "car-x\n"], r"user name: 'car-x\n'"),
        (["broker", "--write-mosquitto-config", "conf", "--user", "car-x\r"], r"user name: 'car-x\r'"),
        (["broker", "--write-mosquitto-config", "conf", "--user", "car\x1bx"], r"user name: 'car\x1bx'"),
        (["broker", "--write-mosquitto-config", "conf", "--user", "car-x\t"], r"user name: 'car-x\t'"),
        (["schema", "--topic-prefix", "a//b"], "bad --topic-prefix"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "empty").write_text("")
    proc = fleetroom(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "conf").exists()


@pytest.mark.parametrize("missing", brokers.MOSQUITTO_PROGRAMS)
def test_a_missing_mosquitto_program_fails_the_test_in_one_way(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    """Never a skip: `make test` installs them, so their absence is a broken set-up, said the same everywhere."""
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, **kw: None if name == missing else real(name, **kw))
    with pytest.raises(pytest.fail.Exception, match=rf"^{missing} is not installed: .* `make test` installs"):
        require_mosquitto()


async def test_broker_process_serves_with_fleet_credentials(tmp_path: Path) -> None:
    port_file, secret_file = tmp_path / "port", tmp_path / "secret"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetroom", "broker", "--port", "0", "--port-file", str(port_file),
         "--secret-file", str(secret_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        await wait_until(lambda: port_file.exists() and port_file.read_text().strip() != "", timeout=30,
                         what="the port file")
        port = int(port_file.read_text())
        secret = secret_file.read_text().strip().encode()
        assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
        await check_broker(BrokerUrl("127.0.0.1", port, "car-1", derive_password(secret, "car-1")))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"listening on mqtt://127.0.0.1:{port}" in out


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = fleetroom("broker", "--anonymous", "--port", str(port), cwd=tmp_path)
    assert proc.returncode == 2
    assert "cannot start the broker" in proc.stderr and "Traceback" not in proc.stderr


async def test_written_mosquitto_config_runs_and_enforces_logins(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "mq"
    env = {**os.environ, "FLEETROOM_SECRET": "sekrit"}
    proc = fleetroom("broker", "--write-mosquitto-config", str(out), "--port", str(port), "--user", "car-7",
                     "--user", "gw-1", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "fleetroom_auth.so").exists() and oct((out / "secret").stat().st_mode & 0o777) == "0o600"
    mosquitto = MosquittoProcess(out, port)
    await mosquitto.start()
    try:
        for user in ("car-7", "car-not-listed", "gw-1", "dispatcher"):
            await check_broker(BrokerUrl("127.0.0.1", port, user, derive_password(b"sekrit", user)),
                               client_id_for(user))
        with pytest.raises(BrokerUnreachable):
            await check_broker(BrokerUrl("127.0.0.1", port, "car-7", "wrong"), client_id_for("car-7"))
        with pytest.raises(BrokerUnreachable):  # a valid login, but another user's client id
            await check_broker(BrokerUrl("127.0.0.1", port, "car-7", derive_password(b"sekrit", "car-7")),
                               client_id_for("gw-1"))
    finally:
        await mosquitto.stop()


def test_mosquitto_config_without_a_compiler_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "FLEETROOM_SECRET": "sekrit", "PATH": str(tmp_path / "empty-bin")}
    proc = subprocess.run([sys.executable, "-m", "fleetroom", "broker", "--write-mosquitto-config", "mq"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "fleetroom broker: error: cannot build the Mosquitto plugin: no C compiler `cc`; install Debian's gcc "
        "mosquitto-dev libmosquitto-dev libssl-dev (apt-get install -y gcc mosquitto-dev libmosquitto-dev libssl-dev)"
    ]
    assert not (tmp_path / "mq").exists()
