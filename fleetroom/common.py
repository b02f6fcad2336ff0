"""What every sub-command shares: broker and secret flags, logging, and clean failures."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import secrets
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mqttlink import (
    BROKER_ENV,
    CA_ENV,
    CLIENT_CERT_ENV,
    CLIENT_KEY_ENV,
    BrokerUnreachable,
    BrokerUrl,
    BrokerUrlError,
    broker_url_from,
    client_ssl_context,
    parse_broker_url,
    per_user_certs,
    tls_files_from_env,
)
from protocol import ConnectionStatus, ProtocolError, decode, dispatcher_online
from protocol.identity import SECRET_ENV, derive_password
from protocol.topics import DEFAULT_PREFIX, TopicError, Topics

if TYPE_CHECKING:
    import aiomqtt

T = TypeVar("T")
DEFAULT_SECRET_FILE = Path(".fleetroom/secret")
DEFAULT_LEDGER = Path(".fleetroom/ledger.sqlite")  # the dispatcher's --db, which `fleetroom earnings` reads
DEFAULT_TLS_DIR = Path(".fleetroom/tls")  # the local CA and the broker's certificate (`fleetroom broker --tls`)
DEFAULT_LOCAL_BROKER = "mqtt://127.0.0.1:1883"
log = logging.getLogger(__name__)


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


SIM_EPOCH_HELP = (
    "Unix time at which the simulation stood at --sim-start: processes given the same epoch agree on "
    "simulation time however far apart they start (default: when this process starts)"
)


@dataclass(frozen=True)
class FiniteRange:
    """The finite numbers a flag or a file's key accepts: an argparse `type=` and a check of a parsed value."""

    lo: float
    hi: float
    above: bool = False  # `lo` itself is refused
    whole: bool = False  # integers only
    noun: str = ""  # what the number is, when "a number" does not say enough

    def describe(self) -> str:
        """What an accepted value is, e.g. "a number above 0 and at most 1e+06"."""
        noun = self.noun or ("a whole number" if self.whole else "a number")
        lo, hi = (f"{int(b)}" if self.whole else f"{b:g}" for b in (self.lo, self.hi))
        return f"{noun} above {lo} and at most {hi}" if self.above else f"{noun} within {lo}..{hi}"

    def check(self, value: object) -> float:
        """`value` from a parsed file (an int stays an int), or a one-line `ValueError` saying what it must be."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not self._fits(value):
            raise ValueError(f"must be {self.describe()}, not {shown(value)}")
        return value if self.whole else float(value)

    def _fits(self, value: float) -> bool:
        if isinstance(value, float) and (self.whole or not math.isfinite(value)):
            return False
        return (self.lo < value if self.above else self.lo <= value) and value <= self.hi

    def __call__(self, text: str) -> Any:
        """The flag's text as a number in range; argparse prints the error after the flag's name."""
        try:
            return self.check(int(text) if self.whole else float(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, not {shown(text)}") from None


def finite(lo: float, hi: float, *, above: bool = False, noun: str = "") -> FiniteRange:
    """A finite number within lo..hi (above lo, if asked): for `type=` and for a file's values."""
    return FiniteRange(lo, hi, above=above, noun=noun)


def whole(lo: int, hi: int) -> FiniteRange:
    """An integer within lo..hi: for `type=` and for a file's values."""
    return FiniteRange(lo, hi, whole=True)


def shown(value: object) -> str:
    """A value as an error message quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


MAX_SPEED = 1e6  # simulated seconds per wall second
MAX_WALL_S = 10 * 365 * 86400.0  # the longest --duration or --grow-over
MAX_SEED = 2**63 - 1
MAX_CARS = 10_000_000  # cars in one fleet, emulated or planned
SPEED = finite(0, MAX_SPEED, above=True)
"""`--speed`: simulated seconds per wall second."""
WALL_S = finite(0, MAX_WALL_S, above=True)
"""A wall-clock span such as `--duration`."""
SEED = whole(0, MAX_SEED)
"""A random seed (`--seed`)."""
CARS = whole(1, MAX_CARS)
"""A number of cars (`--count`, `--cars`)."""
sim_epoch = finite(0, 1e10, above=True, noun="a Unix time in seconds")
"""The `--sim-epoch` flag: a Unix time in seconds."""


def clock_flags(speed: float, sim_start: datetime, epoch: float) -> list[str]:
    """One simulation clock as flags for a child: a part started, or restarted, later is in step."""
    return ["--speed", f"{speed:g}", "--sim-start", sim_start.isoformat(), "--sim-epoch", f"{epoch:.3f}"]


class DispatcherWatch:
    """Whether a dispatcher is online, from the retained process statuses (its Last Will included).

    Job submissions and dispatcher commands are not retained: with no dispatcher subscribed they
    reach nobody, so whoever sends them asks this first.
    """

    def __init__(self) -> None:
        self._statuses: dict[str, ConnectionStatus] = {}  # the latest status of each process connection

    @property
    def online(self) -> bool:
        return dispatcher_online(self._statuses.values())

    def seen(self, payload: bytes) -> None:
        try:
            message = decode(payload)
        except ProtocolError:
            log.warning("ignored an undecodable process status")
            return
        if isinstance(message, ConnectionStatus):
            self._statuses[message.sender] = message

    async def follow(self, client: aiomqtt.Client, *, until_online: bool = False) -> None:
        """Read the statuses `client` is subscribed to; return once one is online if asked to."""
        self._statuses.clear()  # a new session: the retained statuses arrive again
        async for message in client.messages:
            if isinstance(message.payload, bytes | bytearray):
                self.seen(bytes(message.payload))
            if until_online and self.online:
                return


def add_tls_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--ca-file`, `--client-cert` and `--client-key`, for mqtts:// broker URLs."""
    parser.add_argument(
        "--ca-file", type=Path, metavar="FILE",
        help=f"with an mqtts:// broker: the CA that signed its certificate, e.g. .fleetroom/tls/ca.crt "
        f"(default: ${CA_ENV}, else the system's CAs)",
    )
    parser.add_argument(
        "--client-cert", type=Path, metavar="FILE|DIR",
        help=f"with an mqtts:// broker: a client certificate (mutual TLS), or a directory of NAME.crt/NAME.key "
        f"per user as `fleetroom certs issue` writes them (default: ${CLIENT_CERT_ENV})",
    )
    parser.add_argument(
        "--client-key", type=Path, metavar="FILE",
        help=f"the client certificate's key (default: ${CLIENT_KEY_ENV}, else in the certificate file)",
    )


def with_tls_flags(url: BrokerUrl, args: argparse.Namespace) -> BrokerUrl:
    """`url` with the TLS files of the flags (then of the environment); a bad or missing file is a `CliError`."""
    files = [getattr(args, name, None) for name in ("ca_file", "client_cert", "client_key")]
    try:
        url = tls_files_from_env(url.with_tls_files(*(str(f) if f else None for f in files)))
    except BrokerUrlError as exc:
        raise CliError(str(exc)) from None
    return check_tls_files(url)


def check_tls_files(url: BrokerUrl) -> BrokerUrl:
    """`url`, once its CA and client certificate load: fail now, in one line, not at the first connection."""
    if url.tls:
        try:
            client_ssl_context(url)
        except BrokerUrlError as exc:
            raise CliError(str(exc)) from None
    return url


def url_from_flag(text: str | None, args: argparse.Namespace) -> BrokerUrl | None:
    """The URL of a command's own `--broker` flag with its TLS flags applied, or None without one."""
    if not text:
        return None
    try:
        url = parse_broker_url(text)
    except BrokerUrlError as exc:
        raise CliError(str(exc)) from None
    return with_tls_flags(url, args)


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """`--broker`, the TLS files, `--topic-prefix`, `--secret-file` and `-v`, the same on every command."""
    group = parser.add_argument_group("broker")
    group.add_argument(
        "--broker",
        metavar="URL",
        help=f"MQTT 3.1.1 broker as mqtt://[user:pass@]host:port, or mqtts://... for TLS (default port 8883) "
        f"(default: ${BROKER_ENV}, else {DEFAULT_LOCAL_BROKER})",
    )
    add_tls_arguments(group)
    group.add_argument(
        "--topic-prefix",
        default=os.environ.get("FLEETROOM_TOPIC_PREFIX", DEFAULT_PREFIX),
        help="topic prefix; the versioned root is PREFIX/v1 (default: %(default)s)",
    )
    group.add_argument(
        "--secret-file",
        type=Path,
        help=f"fleet secret from which per-user passwords are derived (default: ${SECRET_ENV}, "
        f"else {DEFAULT_SECRET_FILE} if it exists; none means anonymous)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")


def topics_from(args: argparse.Namespace) -> Topics:
    """The topic map named by `--topic-prefix`."""
    try:
        return Topics(args.topic_prefix)
    except TopicError as exc:
        raise CliError(f"bad --topic-prefix: {exc}") from None


def read_secret(path: Path | None, *, create: bool = False) -> bytes | None:
    """The fleet secret from `path`, $FLEETROOM_SECRET or the default file; None if there is none."""
    if path is None and os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV].encode()
    target = path or DEFAULT_SECRET_FILE
    if target.exists():
        try:
            text = target.read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read secret file {target}: {exc.strerror}") from None
        if not text:
            raise CliError(f"secret file {target} is empty")
        return text.encode()
    if path is not None and not create:
        raise CliError(f"secret file {path} does not exist")
    if not create:
        return None
    text = secrets.token_urlsafe(32)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(mode=0o600)
        target.chmod(0o600)  # before the secret is written, whatever the umask
        target.write_text(text + "\n")
    except OSError as exc:
        raise CliError(f"cannot create secret file {target}: {exc.strerror or exc}") from None
    return text.encode()


def broker_for(args: argparse.Namespace, username: str | None) -> BrokerUrl:
    """The broker URL from the flags, logged in as `username` when the URL names nobody.

    A password is derived from the fleet secret if there is one; otherwise the connection is
    anonymous (which the embedded demo broker allows), unless each user has its own client
    certificate (then the user name says which one).
    """
    try:
        url = broker_url_from(args.broker) or broker_url_from(DEFAULT_LOCAL_BROKER)
    except BrokerUrlError as exc:
        raise CliError(str(exc)) from None
    assert url is not None
    url = with_tls_flags(url, args)
    url = login_as(url, username, read_secret(args.secret_file) if username and not url.username else None)
    return check_tls_files(url) if per_user_certs(url) else url


def login_as(url: BrokerUrl, username: str | None, secret: bytes | None) -> BrokerUrl:
    """`url` logged in as `username` (password derived from `secret`), unless the URL names its own user."""
    if url.username or username is None:
        return url
    if secret is not None:
        return url.with_credentials(username, derive_password(secret, username))
    return url.with_credentials(username, None) if per_user_certs(url) else url


def setup_logging(verbose: int, log_file: Path | None = None) -> None:
    """Log to stderr (or to `log_file`, as the TUI requires); amqtt and transitions at WARNING."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; broker failures at start-up become one-line errors."""
    try:
        return asyncio.run(coro)
    except BrokerUnreachable as exc:
        raise CliError(str(exc)) from None


def host_name(name: str) -> str:
    """A host name as the web server's checks compare it: lower case, an IPv6 address without brackets."""
    return name.strip().strip("[]").lower()
