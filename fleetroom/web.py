"""The control room in a browser: textual-serve starts one `fleetroom tui` process per visitor.

Each visitor's process has its own MQTT connection and client id, logged in under the role the
server was started with (observer with --read-only, else operator). The broker URL, with that
role's password, reaches the process through $FLEETROOM_BROKER, never its command line; the
fleet secret does not reach it at all, and nothing but the terminal's drawing reaches the browser.
Pages and WebSockets are served only to the names the server listens on or is told to allow (no DNS
rebinding; a wildcard address needs its names given), WebSockets only to pages of the same origin,
with an `Origin` header (no other site can drive an operator's control room), at most `max_visitors`
at once, each terminal's size bounded.
Stopping the server (Ctrl-C, SIGTERM) asks every visitor's control room to quit, then ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from fleetroom.commands.tui import MAX_VISITORS, WEB_SERVER_PID_ENV, is_wildcard
from fleetroom.common import host_name
from mqttlink import BROKER_ENV, BrokerUrl
from protocol import Topics
from protocol.identity import SECRET_ENV

log = logging.getLogger(__name__)
QUIT_GRACE_S = 5.0  # how long a visitor's control room gets to quit before it is terminated
TICK_S = 1.0
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WIDTH_CELLS = (20, 500)  # a visitor's terminal width is kept within these bounds
HEIGHT_CELLS = (10, 200)
FONT_SIZE_PX = (6, 64)
FULL_CLOSE_CODE = 1013  # WebSocket "try again later"


def bounded(value: object, default: int, bounds: tuple[int, int]) -> int:
    """`value` as a whole number within `bounds` (`default` if it is none)."""
    try:
        number = int(str(value))
    except (TypeError, ValueError, OverflowError):
        number = default
    return max(bounds[0], min(bounds[1], number))


def terminal_size(width: object, height: object) -> tuple[int, int]:
    """A visitor's (width, height) in cells, kept within WIDTH_CELLS and HEIGHT_CELLS."""
    return bounded(width, 80, WIDTH_CELLS), bounded(height, 24, HEIGHT_CELLS)


class ServeError(Exception):
    """The server cannot start (a bad host, a port in use); one line for the user."""


@dataclass(frozen=True)
class ControlRoomCommand:
    """What each visitor runs: `fleetroom tui` logged in as one role, its log in a file of its own."""

    broker_url: BrokerUrl
    topics: Topics
    read_only: bool
    log_dir: Path
    log_stem: str = "control-room-web"
    verbose: int = 1

    def argv(self, visitor: int) -> list[str]:
        """The command line of visitor number `visitor`: no broker URL, no password, no secret."""
        log_file = (self.log_dir / f"{self.log_stem}-{visitor}.log").resolve()
        flags = ["--topic-prefix", self.topics.prefix, "--log-file", str(log_file), *["-v"] * self.verbose]
        return [sys.executable, "-m", "fleetroom", "tui", *flags, *(["--read-only"] if self.read_only else [])]

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with this role's broker URL (password included), without the fleet secret, and naming
        this server, with which the visitor's control room ends."""
        env = {name: value for name, value in base.items() if name != SECRET_ENV}
        env[BROKER_ENV] = self.broker_url.full()
        env[WEB_SERVER_PID_ENV] = str(os.getpid())
        return env


class VisitorProcess(AppService):
    """One visitor's control room: started without a shell, in a session of its own, ended for sure."""

    def __init__(self, argv: list[str], env: Callable[[dict[str, str]], dict[str, str]], **kwargs: Any) -> None:
        super().__init__(" ".join(argv[2:4]), **kwargs)  # the command string is only a label here
        self.argv = argv
        self._env = env

    async def start(self, width: int, height: int) -> None:
        await super().start(*terminal_size(width, height))

    async def set_terminal_size(self, width: int, height: int) -> None:
        await super().set_terminal_size(*terminal_size(width, height))

    async def _open_app_process(self, width: int = 80, height: int = 24) -> asyncio.subprocess.Process:
        # its own session: a Ctrl-C at the server's terminal reaches the server, which ends each visitor in turn
        self._process = process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._env(self._build_environment(width, height)),
            start_new_session=True,
        )
        assert process.stdin is not None
        self._stdin = process.stdin
        return process

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def end(self, grace_s: float = QUIT_GRACE_S) -> None:
        """Ask the control room to quit; terminate it, then kill it, if it does not within `grace_s`."""
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError, AssertionError):
            await asyncio.wait_for(self.stop(), grace_s)
        process = self._process
        if process is None or process.returncode is not None:
            return
        for stop in (process.terminate, process.kill):
            with contextlib.suppress(ProcessLookupError):
                stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace_s)
                return


@dataclass
class Visitors:
    """The visitors' control rooms now running, each with its WebSocket."""

    count: int = 0  # visitors so far, numbering their log files
    live: dict[VisitorProcess, web.WebSocketResponse] = field(default_factory=dict)

    async def end_all(self) -> None:
        """End every visitor's control room, all at once, then close their WebSockets."""
        services = list(self.live.items())
        await asyncio.gather(*(service.end() for service, _ in services))
        for _, websocket in services:
            await websocket.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a `ServeError`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServeError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def page_url(sock: socket.socket) -> str:
    """The address a browser opens, from the socket actually bound."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


@dataclass(frozen=True)
class Limits:
    """Who may connect: the host names pages are served under, and how many visitors at once."""

    allow_hosts: tuple[str, ...] = ()
    max_visitors: int = MAX_VISITORS


class ControlRoomServer(Server):
    """textual-serve's server, starting `ControlRoomCommand` for each visitor and ending them all on stop."""

    def __init__(self, command: ControlRoomCommand, host: str, title: str, limits: Limits = Limits()) -> None:
        super().__init__(command="fleetroom tui", host=host, port=0, title=title)
        if is_wildcard(host) and not limits.allow_hosts:
            raise ServeError(f"--host {host or repr(host)} listens on every address: name the host names browsers "
                             "will use with --allow-host NAME (against DNS rebinding)")
        self.room = command
        self.visitors = Visitors()
        self.max_visitors = limits.max_visitors
        listened = set() if is_wildcard(host) else {host_name(host)}
        self.allowed_hosts = listened | {host_name(name) for name in limits.allow_hosts} | LOOPBACK_NAMES

    def _trusted_host(self, request: web.Request) -> bool:
        """Whether the page was asked for under an allowed name (not a rebound DNS name)."""
        return host_name(request.url.host or "") in self.allowed_hosts

    def _same_origin(self, request: web.Request) -> bool:
        """Whether a WebSocket comes from this server's own page: browsers always send Origin, so none is refused."""
        return request.headers.get("Origin") == f"{request.scheme}://{request.host}"

    def _full(self) -> bool:
        return len(self.visitors.live) >= self.max_visitors

    def _full_text(self) -> str:
        return f"the control room is full: {self.max_visitors} visitors at once; try again later"

    async def _refuse(self, websocket: web.WebSocketResponse) -> web.WebSocketResponse:
        """Tell one visitor too many, on its terminal and in the close, that the control room is full."""
        log.info("visitor refused: %d visitors already", len(self.visitors.live))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await websocket.send_bytes(f"\r\nfleetroom: {self._full_text()}\r\n".encode())
            await websocket.close(code=FULL_CLOSE_CODE, message=self._full_text().encode()[:120])
        return websocket

    async def handle_index(self, request: web.Request) -> web.Response:
        """textual-serve's page, its WebSocket URL taken from the address the visitor used."""
        if not self._trusted_host(request):
            raise web.HTTPForbidden(text="unknown host name")
        if self._full():
            raise web.HTTPServiceUnavailable(text=f"fleetroom: {self._full_text()}\n")
        base = f"{request.scheme}://{request.host}"
        context = {
            "font_size": bounded(request.query.get("fontsize"), 16, FONT_SIZE_PX),
            "app_websocket_url": f"{'wss' if request.scheme == 'https' else 'ws'}://{request.host}/ws",
            "config": {"static": {"url": f"{base}/static/"}},
            "application": {"name": self.title},
        }
        return aiohttp_jinja2.render_template("app_index.html", request, context)

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """One visitor: a control room process of its own for as long as the WebSocket is open."""
        if not (self._trusted_host(request) and self._same_origin(request)):
            raise web.HTTPForbidden(text="a control room is served only to this server's own page")
        websocket = web.WebSocketResponse(heartbeat=15)
        await websocket.prepare(request)
        if self._full():  # checked and seated with no await between: never more than max_visitors
            return await self._refuse(websocket)
        self.visitors.count += 1
        service = VisitorProcess(self.room.argv(self.visitors.count), self.room.environment,
                                 write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                                 close=websocket.close, download_manager=self.download_manager)
        self.visitors.live[service] = websocket
        try:
            await service.start(to_int(request.query.get("width", "80"), 80),
                                to_int(request.query.get("height", "24"), 24))
            log.info("visitor %d: control room pid %s", self.visitors.count, service.pid)
            await self._process_messages(websocket, service)
        except (ConnectionError, RuntimeError) as exc:  # the visitor went away mid-message
            log.info("visitor's WebSocket ended: %s", exc)
        finally:
            self.visitors.live.pop(service, None)
            await service.end()
        return websocket

    async def run(self, sock: socket.socket, stop: asyncio.Event, tick: Callable[[], bool] | None = None) -> None:
        """Serve on `sock` until `stop` is set or `tick` (run each second) says to stop; then end every
        visitor's control room and the server."""
        runner = web.AppRunner(await self._make_app(), handle_signals=False, access_log=None,
                               shutdown_timeout=QUIT_GRACE_S)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TICK_S)
                if tick is not None and not tick():
                    stop.set()
        finally:
            await self.visitors.end_all()
            await runner.cleanup()

    async def on_startup(self, app: web.Application) -> None:
        """Nothing to print: `serve` prints the URL."""


def serve(command: ControlRoomCommand, host: str, port: int, *, title: str, announce: Callable[[str], None],
          limits: Limits = Limits(), tick: Callable[[], bool] | None = None) -> int:
    """Serve the control room until Ctrl-C, SIGTERM or a `tick` (each second) that returns False;
    `announce` gets the page's URL.

    Returns how many visitors the server had.
    """
    server = ControlRoomServer(command, host, title, limits)
    sock = bind(host, port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        announce(page_url(sock))
        await server.run(sock, stop, tick)

    try:
        asyncio.run(main())
    finally:
        sock.close()
    log.info("web control room stopped after %d visitors (pid %d)", server.visitors.count, os.getpid())
    return server.visitors.count
