"""`fleetroom`: one entry point whose sub-commands live in `fleetroom.commands.*`.

Each command module has a docstring (its help), `add_arguments(parser)` and `run(args) -> int`.
Errors a user can fix end in one line on stderr per problem and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from fleetroom import commands
from fleetroom.common import CliError

ORDER = ("demo", "broker", "vehicles", "dispatcher", "submit", "policy", "tui", "earnings", "loadtest", "schema")


def _command_modules() -> dict[str, ModuleType]:
    names = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return {name: importlib.import_module(f"fleetroom.commands.{name}") for name in names}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = OneLineParser(
        prog="fleetroom",
        description="Parked electric cars as one distributed AI datacenter: broker, fleet, "
        "dispatcher and a terminal control room, over MQTT.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _command_modules().items():
        doc = (module.__doc__ or name).strip()
        summary = doc.splitlines()[0]
        command = sub.add_parser(
            name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (also for a bad flag, or --help)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its one line, or the help
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        code = int(args._run(args))
    except CliError as exc:
        for problem in str(exc).splitlines():
            print(f"fleetroom {args.command}: error: {problem}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
