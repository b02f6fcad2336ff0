"""`fleetroom tui --web` in a real browser: Debian's headless Chromium, driven by Playwright, against a real
broker (with fleet credentials), dispatcher and cars, each its own process.

The page draws the terminal on a canvas (xterm.js), so the test reads the text from xterm.js's own
buffer, the one the canvas is painted from: an init script keeps the page's terminal object when
textual.js builds it. A screenshot of each page is kept: in the test's tmp_path and, if
$FLEETROOM_ARTEFACTS is set, copied into that directory.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fleetroom.common import clock_flags
from fleetroom.compose.stack import Stack
from fleetroom.compose.supervisor import Supervisor, fleetroom_command, read_port_file, wait_for
from mqttlink import BROKER_ENV, BrokerUrl, parse_broker_url
from protocol.identity import SECRET_ENV
from tests.support.demo_loadtest import processes_in, wait_gone

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTEFACTS_ENV = "FLEETROOM_ARTEFACTS"
CARS = 3
PREFIX = "tweb"
SECRET = "web-test-fleet-secret-7f3a9c"
JOBS_HEADER = r"job\s+name\s+status\s+progress"
# Keeps the terminal object textual.js builds (it sets `webglAddon` on it first) and reads its screen.
READ_SCREEN = """
Object.defineProperty(Object.prototype, 'webglAddon', {configurable: true, set(value) {
  window.__fleetroomTerminal = this;
  Object.defineProperty(this, 'webglAddon', {value, writable: true, configurable: true, enumerable: true});
}});
window.__screenText = () => {
  const session = window.__fleetroomTerminal, terminal = session && session.terminal;
  if (!terminal) return '';
  const buffer = terminal.buffer.active, rows = [];
  for (let i = 0; i < terminal.rows; i++) {
    const line = buffer.getLine(buffer.viewportY + i);
    rows.push(line ? line.translateToString(true) : '');
  }
  return rows.join('\\n');
};
"""


@contextmanager
def fleet_stack(run_dir: Path) -> Iterator[Stack]:
    """A broker that checks fleet credentials, the dispatcher and CARS cars, each its own process."""
    secret_file = run_dir / "secret"
    run_dir.mkdir(parents=True, exist_ok=True)
    secret_file.write_text(SECRET + "\n")
    with Supervisor(run_dir) as supervisor:
        port_file = run_dir / "broker.port"
        supervisor.start("broker", fleetroom_command("broker", "--port", "0", "--port-file", str(port_file),
                                                     "--secret-file", str(secret_file), "--topic-prefix", PREFIX))
        wait_for(lambda: read_port_file(port_file) is not None, 30, "the broker's port file", supervisor)
        port = read_port_file(port_file)
        assert port is not None
        stack = Stack(supervisor, PREFIX)
        stack.use_external(BrokerUrl("127.0.0.1", port))
        stack.use_secret(SECRET.encode())
        clock = clock_flags(60.0, datetime.now(UTC).replace(hour=10, minute=0), time.time())
        stack.start_dispatcher(run_dir / "ledger.sqlite3", [*clock, "--summary-interval", "1"])
        stack.start_fleet("fleet", ["--count", str(CARS), "--hardware-mix", "HW4=1", "--telemetry-interval", "30",
                                    "--seed", "7", "--mode", "gateway", *clock])
        yield stack


@contextmanager
def quiet_stack(run_dir: Path) -> Iterator[Stack]:
    """Only an anonymous broker: nothing to draw, so a control room writes nothing once drawn."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "secret").write_text(SECRET + "\n")
    with Supervisor(run_dir) as supervisor:
        stack = Stack(supervisor, PREFIX)
        stack.start_embedded()
        yield stack


@contextmanager
def web_server(stack: Stack, cwd: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`fleetroom tui --web --port 0` as its own process, in `cwd`; yields it and the URL it printed."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in (SECRET_ENV, BROKER_ENV)}
    argv = [sys.executable, "-m", "fleetroom", "tui", "--web", "--port", "0",
            "--broker", str(stack.url_or_fail()), "--secret-file", str(stack.run_dir / "secret"),
            "--topic-prefix", PREFIX, "--log-file", str(cwd / "server.log"), *flags]
    with (cwd / "server.err").open("w") as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the server prints its URL once it listens
        found = re.search(r"http://\S+/", line)
        assert found, f"no URL in {line!r}; stderr: {(cwd / 'server.err').read_text()[-2000:]}"
        yield proc, found.group(0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, with a fresh profile; the test fails (never skips) without it."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: `make test` installs it (.ci/system-deps)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_control_room(browser: Any, url: str) -> Any:
    """A page of its own (its own browser context, so its own visitor) showing the control room."""
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.add_init_script(READ_SCREEN)
    page.goto(url)
    return page


def screen_of(page: Any) -> str:
    return str(page.evaluate("window.__screenText ? window.__screenText() : ''"))


def wait_for_screen(page: Any, pattern: str, what: str, timeout_s: float = 60.0) -> re.Match[str]:
    """Wait until the page's terminal shows `pattern`; fail with the screen so far."""
    deadline = time.monotonic() + timeout_s
    while not (found := re.search(pattern, screen_of(page))):
        assert time.monotonic() < deadline, f"timed out waiting for {what}; the screen:\n{screen_of(page)}"
        page.wait_for_timeout(200)
    return found


def keep_screenshot(page: Any, path: Path) -> Path:
    """A screenshot in `path`, and a copy in $FLEETROOM_ARTEFACTS if it is set."""
    page.screenshot(path=str(path))
    if target := os.environ.get(ARTEFACTS_ENV):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


def visitor_processes(cwd: Path, server_pid: int) -> list[int]:
    """The control room processes the server started (they run in its directory)."""
    return [pid for pid in processes_in(cwd) if pid != server_pid and b"tui" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)


def stop_server(proc: subprocess.Popen[str], cwd: Path) -> None:
    """Ctrl-C (SIGINT): the server exits 0 and leaves no visitor's control room running."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, (cwd / "server.err").read_text()[-2000:]
    assert wait_gone(cwd) == [], "processes left running after Ctrl-C"


def test_the_control_room_in_chromium(tmp_path: Path) -> None:
    """Two visitors, each with a control room process of their own, logged in as operator; `j` opens the jobs."""
    web_dir = tmp_path / "web"
    with fleet_stack(tmp_path / "run") as stack, web_server(stack, web_dir) as (proc, url), chromium() as browser:
        assert url.startswith("http://127.0.0.1:")
        first, second = open_control_room(browser, url), open_control_room(browser, url)
        for page in (first, second):
            tops = wait_for_screen(page, r"TOTAL ([\d,.]+ [kMGT]?TOPS)", "the header's TOPS")
            assert tops.group(1) != "0 TOPS"
            wait_for_screen(page, rf"cars {CARS}:", "the header's car count")
            wait_for_screen(page, r"operator@127\.0\.0\.1:\d+ connected", "the operator's connection")
        keep_screenshot(first, tmp_path / "web-control-room-nodes.png")
        assert not re.search(JOBS_HEADER, screen_of(first)), "the jobs tab shows before any key"
        first.locator(".xterm-screen").click()
        first.keyboard.press("j")
        wait_for_screen(first, JOBS_HEADER, "the jobs tab after pressing j")
        assert not re.search(JOBS_HEADER, screen_of(second)), "a key in one visitor's page reached another's"
        keep_screenshot(first, tmp_path / "web-control-room-jobs.png")
        visitors = visitor_processes(web_dir, proc.pid)
        assert len(visitors) == 2, visitors
        for pid in visitors:
            env = _environ(pid)
            assert SECRET_ENV not in env and SECRET.encode() not in _cmdline(pid)
            assert parse_broker_url(env[BROKER_ENV]).username == "operator"
            assert b"operator:" not in _cmdline(pid) and env[BROKER_ENV] not in _cmdline(pid).decode()
        page_html = first.content()
        assert SECRET not in page_html and SECRET not in screen_of(first)
        stop_server(proc, web_dir)
    assert (tmp_path / "web-control-room-jobs.png").stat().st_size > 10_000


def test_a_read_only_server_logs_every_visitor_in_as_observer(tmp_path: Path) -> None:
    web_dir = tmp_path / "web"
    with fleet_stack(tmp_path / "run") as stack, web_server(stack, web_dir, "--read-only") as (proc, url), \
            chromium() as browser:
        page = open_control_room(browser, url)
        wait_for_screen(page, r"observer@127\.0\.0\.1:\d+ connected", "the observer's connection")
        wait_for_screen(page, rf"cars {CARS}:", "the header's car count")
        keep_screenshot(page, tmp_path / "web-control-room-read-only.png")
        [visitor] = visitor_processes(web_dir, proc.pid)
        assert parse_broker_url(_environ(visitor)[BROKER_ENV]).username == "observer"
        assert b"--read-only" in _cmdline(visitor)
        stop_server(proc, web_dir)


async def test_visitors_end_with_a_server_killed_by_sigkill(tmp_path: Path) -> None:
    """No orphans: a visitor's control room ends even when its server gets no chance to end it (and even
    when it has nothing to draw, so no broken pipe would end it)."""
    import aiohttp

    web_dir = tmp_path / "web"
    with quiet_stack(tmp_path / "run") as stack, web_server(stack, web_dir) as (proc, url):
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(url.replace("http", "ws", 1) + "ws?width=100&height=30",
                                   origin=url.rstrip("/")) as websocket:
            drawn = b""
            while b"control room" not in drawn:  # drawn once: from now on it has nothing to write
                async with asyncio.timeout(30):
                    message = await websocket.receive()
                assert message.type is aiohttp.WSMsgType.BINARY, message
                drawn += message.data
            [visitor] = visitor_processes(web_dir, proc.pid)
            proc.kill()
            proc.wait(10)
            left = await asyncio.to_thread(wait_gone, web_dir)
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            assert left == [], f"visitor {visitor} outlived its server"


def _status(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_other_sites_cannot_drive_the_control_room(tmp_path: Path) -> None:
    """A page from another origin, or a client sending no Origin, gets no WebSocket, a rebound host name no
    page, and no process starts."""
    web_dir = tmp_path / "web"
    with quiet_stack(tmp_path / "run") as stack, web_server(stack, web_dir) as (proc, url):
        host = url.split("/")[2]
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        assert _status(url + "ws", {**upgrade, "Origin": "http://evil.example"}) == 403
        assert _status(url + "ws", upgrade) == 403
        assert _status(url, {"Host": f"evil.example:{host.split(':')[1]}"}) == 403
        assert _status(url, {}) == 200
        assert visitor_processes(web_dir, proc.pid) == []
        stop_server(proc, web_dir)


async def _drawn(websocket: Any) -> bytes:
    """What a visitor's terminal got until its control room drew itself."""
    import aiohttp

    drawn = b""
    while b"control room" not in drawn:
        async with asyncio.timeout(30):
            message = await websocket.receive()
        assert message.type is aiohttp.WSMsgType.BINARY, message
        drawn += message.data
    return drawn


async def test_visitors_are_capped_and_their_terminals_bounded(tmp_path: Path) -> None:
    """With --max-visitors 1 a second visitor gets a refusal (on its terminal, in the close, and a 503 page)
    and no process; a visitor asking for a 99999x0 terminal gets 500x10."""
    import aiohttp

    web_dir = tmp_path / "web"
    with quiet_stack(tmp_path / "run") as stack, web_server(stack, web_dir, "--max-visitors", "1") as (proc, url):
        ws_url, origin = url.replace("http", "ws", 1) + "ws", url.rstrip("/")
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(ws_url + "?width=99999&height=0", origin=origin) as first:
            await _drawn(first)
            [visitor] = visitor_processes(web_dir, proc.pid)
            assert (_environ(visitor)["COLUMNS"], _environ(visitor)["ROWS"]) == ("500", "10")
            async with session.ws_connect(ws_url, origin=origin) as second:
                async with asyncio.timeout(30):
                    told = await second.receive()
                    closed = await second.receive()
            assert told.type is aiohttp.WSMsgType.BINARY and b"the control room is full" in told.data
            assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 1013, closed
            async with session.get(url) as page:
                assert page.status == 503 and "1 visitors at once" in await page.text()
            assert visitor_processes(web_dir, proc.pid) == [visitor]
        stop_server(proc, web_dir)


def test_terminal_sizes_are_bounded() -> None:
    from fleetroom.web import terminal_size

    assert terminal_size(99999, 0) == (500, 10)
    assert terminal_size(-5, 10**30) == (20, 200)
    assert terminal_size("wide", None) == (80, 24)
    assert terminal_size(120, 40) == (120, 40)


async def test_a_resize_is_bounded_too() -> None:
    from fleetroom.web import VisitorProcess

    sent: list[dict[str, Any]] = []

    async def nothing(*_: Any) -> None:
        return None

    service = VisitorProcess(["python", "-m", "fleetroom", "tui"], dict, write_bytes=nothing, write_str=nothing,
                             close=nothing, download_manager=None)

    async def send_meta(data: dict[str, Any]) -> bool:
        sent.append(data)
        return True

    service.send_meta = send_meta  # type: ignore[method-assign]
    await service.set_terminal_size(100_000, 100_000)
    assert (sent[0]["width"], sent[0]["height"]) == (500, 200)


def _server(host: str, *allow: str) -> Any:
    from fleetroom.web import ControlRoomCommand, ControlRoomServer, Limits
    from protocol import Topics

    command = ControlRoomCommand(BrokerUrl("127.0.0.1", 1883), Topics(PREFIX), read_only=True, log_dir=Path("."))
    return ControlRoomServer(command, host, "test", Limits(allow_hosts=allow))


def test_a_wildcard_server_serves_only_the_names_it_is_given() -> None:
    """Bound to 0.0.0.0, the page is served under --allow-host names and loopback, not a rebound name."""
    from aiohttp.test_utils import make_mocked_request

    from fleetroom.web import ServeError

    with pytest.raises(ServeError, match="--allow-host"):
        _server("0.0.0.0")
    server = _server("0.0.0.0", "Fleet.Example")
    trusted = {name: server._trusted_host(make_mocked_request("GET", "/", headers={"Host": f"{name}:8000"}))
               for name in ("fleet.example", "localhost", "rebound.evil.example")}
    assert trusted == {"fleet.example": True, "localhost": True, "rebound.evil.example": False}


@pytest.mark.parametrize(("flags", "message"), [
    (["--web", "--port", "70000"], "argument --port: must be a whole number within 0..65535"),
    (["--port", "8080"], "--host, --port, --allow-host and --max-visitors need --web"),
    (["--max-visitors", "3"], "--host, --port, --allow-host and --max-visitors need --web"),
    (["--web", "--max-visitors", "0"], "argument --max-visitors: must be a whole number within 1..1000"),
    (["--web", "--host", "0.0.0.0", "--port", "0"], "--host 0.0.0.0 listens on every address"),
    (["--web", "--allow-host", "http://x:80"], "argument --allow-host: not a host name"),
    (["--web", "--host", "no-such-host.invalid", "--port", "0"], "cannot serve on no-such-host.invalid:0"),
])
def test_bad_web_flags_are_one_line_and_exit_2(tmp_path: Path, flags: list[str], message: str) -> None:
    with Supervisor(tmp_path / "run") as supervisor:
        port_file = tmp_path / "broker.port"
        supervisor.start("broker", fleetroom_command("broker", "--port", "0", "--port-file", str(port_file),
                                                     "--anonymous"))
        wait_for(lambda: read_port_file(port_file) is not None, 30, "the broker's port file", supervisor)
        result = subprocess.run([sys.executable, "-m", "fleetroom", "tui", *flags, "--broker",
                                 f"mqtt://127.0.0.1:{read_port_file(port_file)}", "--log-file",
                                 str(tmp_path / "tui.log")], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_the_demo_serves_its_control_room_to_chromium(tmp_path: Path) -> None:
    """`fleetroom demo --web`: the demo's fleet in the browser; Ctrl-C stops the server, visitors and the demo."""
    web_dir, run_dir = tmp_path / "web", tmp_path / "run"
    web_dir.mkdir()
    argv = [sys.executable, "-m", "fleetroom", "demo", "--web", "--port", "0", "--cars", str(CARS), "--grow-to",
            str(CARS), "--job-rate", "0", "--run-dir", str(run_dir), "--topic-prefix", "tdemoweb"]
    with (web_dir / "server.err").open("w") as err:
        proc = subprocess.Popen(argv, cwd=web_dir, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline())
        assert found, (web_dir / "server.err").read_text()[-2000:]
        with chromium() as browser:
            page = open_control_room(browser, found.group(0))
            wait_for_screen(page, r"TOTAL [\d,.]+ [kMGT]?TOPS", "the header's TOPS")
            wait_for_screen(page, rf"cars {CARS}:", "the header's car count")
            keep_screenshot(page, tmp_path / "web-demo.png")
            assert len(visitor_processes(web_dir, proc.pid)) == 1
            stop_server(proc, web_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert wait_gone(run_dir) == [], "demo processes left running after Ctrl-C"


def test_demo_web_and_headless_exclude_each_other(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "fleetroom", "demo", "--web", "--headless", "--duration", "1",
                             "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--web serves the control room; --headless has none" in lines[0], result.stderr
