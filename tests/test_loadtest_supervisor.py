"""Process supervision with real processes: readiness, restart on the same port, death, clean stop."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from fleetroom.compose import supervisor as supervision
from fleetroom.compose.stack import Stack, port_open
from fleetroom.compose.supervisor import ChildDied, NotReady, Supervisor, wait_for


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


SPAWNS_GRANDCHILD = (
    "import subprocess, sys, time, pathlib\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "pathlib.Path('grandchild.pid').write_text(str(p.pid))\n"
    "time.sleep(120)\n"
)


def test_stop_all_leaves_nothing_running_not_even_grandchildren(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        child = sup.start("spawner", python(SPAWNS_GRANDCHILD))
        pid_file = tmp_path / "grandchild.pid"  # children run in the run directory
        wait_for(pid_file.exists, 20, "the grandchild's pid", sup)
        grandchild = int(pid_file.read_text())
        assert alive(grandchild) and child.pid is not None and alive(child.pid)
    assert not alive(child.pid)
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "STOP_GRACE_S", 0.5)
    code = ("import signal, time, pathlib\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "pathlib.Path('ready').write_text('1')\ntime.sleep(120)\n")
    sup = Supervisor(tmp_path)
    child = sup.start("stubborn", python(code))
    wait_for((tmp_path / "ready").exists, 20, "the child to ignore SIGTERM", sup)
    sup.stop_all()
    assert child.pid is not None and not alive(child.pid)


def test_stubborn_children_are_stopped_together_and_the_first_started_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervision, "STOP_GRACE_S", 1.0)
    code = ("import signal, sys, time, pathlib\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "pathlib.Path(sys.argv[1]).write_text('1')\ntime.sleep(120)\n")
    sup = Supervisor(tmp_path)
    names = ["broker", "dispatcher", "fleet-0", "fleet-1"]
    children = [sup.start(name, [*python(code), name]) for name in names]
    for name in names:
        wait_for((tmp_path / name).exists, 20, f"{name} to ignore SIGTERM", sup)
    started = time.monotonic()
    sup.stop_all()
    # one grace period for the three parts together, one for the broker: not four one after the other
    assert time.monotonic() - started < 3.5
    assert all(c.pid is not None and not alive(c.pid) for c in children)
    killed = [r.getMessage().split()[0] for r in caplog.records if "killing" in r.getMessage()]
    assert killed[-1] == "broker" and sorted(killed[:-1]) == ["dispatcher", "fleet-0", "fleet-1"]


def test_a_dead_child_is_reported_with_its_log(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        sup.start("quitter", python("import sys; print('bye', file=sys.stderr); sys.exit(3)"))
        with pytest.raises(ChildDied) as caught:
            wait_for(lambda: False, 20, "nothing", sup)
        assert caught.value.returncode == 3 and caught.value.name == "quitter"
        assert "bye" in sup.children["quitter"].log_tail()


def test_wait_for_times_out(tmp_path: Path) -> None:
    with pytest.raises(NotReady, match="waiting for Godot"):
        wait_for(lambda: False, 0.2, "Godot")


def test_embedded_broker_child_restarts_on_its_port(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        stack = Stack(sup, "tsup")
        url = stack.start_embedded()
        assert port_open(url.port)
        first = sup.children["broker"].pid
        stack.restart_broker()
        assert port_open(url.port) and sup.children["broker"].pid != first
        sup.check()  # a restart is not a death
        sup.kill("broker")
        sup.check()  # nor is a kill we asked for
    assert not port_open(url.port)
    assert all(not alive(pid) for pid in sup.pids())
