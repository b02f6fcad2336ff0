"""The terminal control room: watch the fleet grow and the work flow; submit and steer jobs.

Logs go to --log-file (never to the terminal the control room draws on). The broker must be
reachable at start (one-line error, exit 2); afterwards the control room rides out broker
restarts, showing "reconnecting". With --read-only it logs in as `observer` and publishes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fleetroom.common import CliError, add_broker_arguments, broker_for, run_async, setup_logging, topics_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument("--read-only", action="store_true",
                        help="observer mode: log in as `observer`, never publish a command")
    parser.add_argument("--log-file", type=Path, default=Path(".fleetroom/tui.log"),
                        help="where logging goes while the control room draws (default: %(default)s)")


async def _check(args: argparse.Namespace) -> None:
    from mqttlink import check_broker

    await check_broker(broker_for(args, "observer" if args.read_only else "operator"))


def run(args: argparse.Namespace) -> int:
    try:
        setup_logging(max(args.verbose, 1), args.log_file)
    except OSError as exc:
        raise CliError(f"cannot write --log-file {args.log_file}: {exc.strerror}") from None
    topics = topics_from(args)
    url = broker_for(args, "observer" if args.read_only else "operator")
    run_async(_check(args))

    from tui.app import FleetroomApp

    app = FleetroomApp(url, topics, read_only=args.read_only)
    app.run()
    return app.return_code or 0
