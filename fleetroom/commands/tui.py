"""The terminal control room: watch the fleet grow and the work flow; submit and steer jobs.

Logs go to --log-file (never to the terminal the control room draws on). The broker must be
reachable at start (one-line error, exit 2); afterwards the control room rides out broker
restarts, showing "reconnecting". With --read-only it logs in as `observer` and publishes nothing.

--web serves the same control room to browsers (textual-serve) on http://127.0.0.1:PORT/ (--host,
--port; port 0 picks a free one and the URL is printed): each visitor gets a control room process of
its own, with its own MQTT connection, logged in as observer (--read-only) or operator. Ctrl-C stops
the server and every visitor's control room. Each visitor's log goes beside --log-file. At most
--max-visitors at once; a wildcard --host needs the names browsers use, each with --allow-host.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from fleetroom.common import (
    CliError,
    add_broker_arguments,
    broker_for,
    host_name,
    run_async,
    setup_logging,
    topics_from,
    whole,
)
from mqttlink import BrokerUrl
from protocol import Topics

WEB_HOST = "127.0.0.1"
WEB_PORT = 8000
MAX_VISITORS = 8
WEB_SERVER_PID_ENV = "FLEETROOM_WEB_SERVER_PID"  # set for a visitor's control room: the server that started it
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument("--read-only", action="store_true",
                        help="observer mode: log in as `observer`, never publish a command")
    parser.add_argument("--log-file", type=Path, default=Path(".fleetroom/tui.log"),
                        help="where logging goes while the control room draws (default: %(default)s)")
    add_web_arguments(parser)


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    """`--web`, `--host` and `--port`: the control room served to browsers."""
    group = parser.add_argument_group("web")
    group.add_argument("--web", action="store_true",
                       help="serve the control room to browsers, a control room process per visitor")
    group.add_argument("--host", help=f"with --web: the address to listen on (default: {WEB_HOST}, this machine only)")
    group.add_argument("--port", type=whole(0, 65535),
                       help=f"with --web: the port to listen on; 0 picks a free one (default: {WEB_PORT})")
    group.add_argument("--allow-host", action="append", type=_host_name, metavar="NAME",
                       help="with --web: a host name browsers may use to reach the server (repeatable); "
                       "needed with a wildcard --host such as 0.0.0.0, against DNS rebinding")
    group.add_argument("--max-visitors", type=whole(1, 1000),
                       help=f"with --web: control rooms served at once; one more is refused (default: {MAX_VISITORS})")


def _host_name(text: str) -> str:
    """An --allow-host value: a bare host name or address, no port, no scheme."""
    name = host_name(text)
    if not name or any(c in name for c in "/@ \t") or (name.count(":") == 1):
        raise argparse.ArgumentTypeError(f"not a host name (no scheme, no port): {text!r}")
    return name


def is_wildcard(host: str) -> bool:
    """Whether `host` is an address meaning every address (0.0.0.0, ::, empty)."""
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    return host == ""


def check_web_arguments(args: argparse.Namespace) -> None:
    """The web flags only mean something with --web; a wildcard --host needs --allow-host."""
    web_only = (args.host, args.port, args.allow_host, args.max_visitors)
    if not args.web and any(value is not None for value in web_only):
        raise CliError("--host, --port, --allow-host and --max-visitors need --web")
    if args.web and args.host is not None and is_wildcard(args.host) and not args.allow_host:
        raise CliError(f"--host {args.host} listens on every address: name the host names browsers will use "
                       "with --allow-host NAME (against DNS rebinding)")


def serve_web(url: BrokerUrl, topics: Topics, *, read_only: bool, args: argparse.Namespace, log_dir: Path,
              title: str, tick: Callable[[], bool] | None = None) -> int:
    """The control room in browsers until Ctrl-C; the URL is printed on stdout."""
    from fleetroom.web import ControlRoomCommand, Limits, ServeError, serve

    command = ControlRoomCommand(url, topics, read_only=read_only, log_dir=log_dir, verbose=max(args.verbose, 1))
    role = "observer (read-only)" if read_only else "operator"

    def announce(page: str) -> None:
        print(f"fleetroom: the control room is served on {page} to each visitor as {role}; "
              "Ctrl-C stops it", flush=True)

    limits = Limits(tuple(args.allow_host or ()), args.max_visitors or MAX_VISITORS)
    try:
        visitors = serve(command, WEB_HOST if args.host is None else args.host,
                         WEB_PORT if args.port is None else args.port, title=title, announce=announce,
                         limits=limits, tick=tick)
    except ServeError as exc:
        raise CliError(str(exc)) from None
    print(f"fleetroom: web control room stopped; visitors' control rooms ended: {visitors}", file=sys.stderr)
    return 0


async def _check(args: argparse.Namespace) -> None:
    from mqttlink import check_broker

    await check_broker(broker_for(args, "observer" if args.read_only else "operator"))


def end_with_web_server() -> None:
    """A visitor's control room ends with the web server that started it, even one killed by SIGKILL (Linux)."""
    server_pid = os.environ.get(WEB_SERVER_PID_ENV, "")
    if not server_pid.isdigit() or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(server_pid):  # the server died before the line above took effect
        raise SystemExit(0)


def run(args: argparse.Namespace) -> int:
    check_web_arguments(args)
    end_with_web_server()
    try:
        setup_logging(max(args.verbose, 1), args.log_file)
    except OSError as exc:
        raise CliError(f"cannot write --log-file {args.log_file}: {exc.strerror}") from None
    topics = topics_from(args)
    url = broker_for(args, "observer" if args.read_only else "operator")
    run_async(_check(args))
    if args.web:
        return serve_web(url, topics, read_only=args.read_only, args=args, log_dir=args.log_file.parent,
                         title="fleetroom control room")

    from tui.app import FleetroomApp

    app = FleetroomApp(url, topics, read_only=args.read_only)
    app.run()
    return app.return_code or 0
