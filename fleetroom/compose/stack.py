"""The processes of one fleet: a broker (embedded, mosquitto or external), dispatcher and fleets.

Demo and load test both build their run from these helpers on top of a `Supervisor`, so the
command lines of the other parts are written in one place.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from broker.mosquitto_config import anonymous_conf, write_mosquitto_config
from fleetroom.compose.supervisor import Supervisor, fleetroom_command, read_port_file, wait_for
from mqttlink import BROKER_ENV, BrokerUrl
from protocol.identity import SECRET_ENV, derive_password
from protocol.topics import Topics

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
BROKER = "broker"
DISPATCHER = "dispatcher"


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (mosquitto cannot report port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Stack:
    """Where the run's broker is and which processes belong to it."""

    supervisor: Supervisor
    topic_prefix: str
    broker_kind: str = "external"  # embedded | mosquitto | external
    url: BrokerUrl | None = None
    fleets: list[str] = field(default_factory=list)
    secret: bytes | None = None  # the fleet secret every part derives its password from, if any

    @property
    def run_dir(self) -> Path:
        return self.supervisor.run_dir

    def url_or_fail(self) -> BrokerUrl:
        assert self.url is not None, "start or name a broker first"
        return self.url

    def broker_flags(self) -> list[str]:
        """`--broker` (only when the URL has no password) and `--topic-prefix` for a child.

        The full URL, password included, reaches children through $FLEETROOM_BROKER (see
        `_use`), so that it shows neither in `ps` nor in the children's log headers.
        """
        assert self.url is not None, "start or name a broker first"
        broker = ["--broker", str(self.url)] if self.url.password is None else []
        return [*broker, "--topic-prefix", self.topic_prefix]

    def _use(self, kind: str, url: BrokerUrl) -> BrokerUrl:
        """Make `url` this run's broker, and hand it to every child started from now on."""
        self.broker_kind, self.url = kind, url
        self._child_env(BROKER_ENV, url.full())
        return url

    def _child_env(self, name: str, value: str) -> None:
        env = dict(os.environ if self.supervisor.env is None else self.supervisor.env)
        env[name] = value
        self.supervisor.env = env

    def use_secret(self, secret: bytes | None) -> None:
        """Log every part in under its own role with `secret`: children get it through $FLEETROOM_SECRET
        (not their command line, which `ps` shows) and derive their own passwords from it."""
        self.secret = secret
        if secret is not None:
            self._child_env(SECRET_ENV, secret.decode())

    def login(self, username: str) -> BrokerUrl:
        """The run's broker logged in as `username`, when there is a secret and the URL names nobody."""
        url = self.url_or_fail()
        if url.username or self.secret is None:
            return url
        return url.with_credentials(username, derive_password(self.secret, username))

    # broker -------------------------------------------------------------------------------
    def use_external(self, url: BrokerUrl) -> None:
        """Run against a broker somebody else runs; it cannot be restarted by a stage."""
        self._use("external", url)

    def start_embedded(self, timeout: float = 30.0) -> BrokerUrl:
        """`fleetroom broker --port 0 --anonymous`; later restarts keep the port it bound."""
        port_file = self.run_dir / "broker.port"
        port_file.unlink(missing_ok=True)
        argv = fleetroom_command(
            "broker", "--port", "0", "--port-file", str(port_file), "--anonymous",
            "--topic-prefix", self.topic_prefix,
        )
        self.supervisor.start(BROKER, argv)
        wait_for(lambda: read_port_file(port_file) is not None, timeout, "the embedded broker's port file",
                 self.supervisor)
        port = read_port_file(port_file)
        assert port is not None
        self.supervisor.children[BROKER].argv = fleetroom_command(
            "broker", "--port", str(port), "--anonymous", "--topic-prefix", self.topic_prefix,
        )
        return self._use("embedded", BrokerUrl("127.0.0.1", port))

    def start_mosquitto(self, timeout: float = 15.0, *, secret: bytes | None = None) -> BrokerUrl:
        """A mosquitto process on a free 127.0.0.1 port with the settings for a million cars.

        With `secret`, it checks fleet logins and each role's topics with the fleetroom plugin
        (built here; `PluginBuildError` if it cannot be), and every part logs in under its role.
        """
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed")
        port = free_port()
        conf = self.run_dir / "mosquitto.conf"
        if secret is None:
            conf.write_text(anonymous_conf(port))
        else:
            conf = write_mosquitto_config(self.run_dir / "mosquitto", secret, Topics(self.topic_prefix), port=port)[0]
            self.use_secret(secret)
        self.supervisor.start(BROKER, [MOSQUITTO, "-c", str(conf)])
        wait_for(lambda: port_open(port), timeout, "mosquitto to listen", self.supervisor)
        return self._use("mosquitto", BrokerUrl("127.0.0.1", port))

    def restart_broker(self, timeout: float = 30.0) -> None:
        """Stop the broker and start it again on the same port (a chaos stage)."""
        if self.broker_kind == "external":
            raise RuntimeError("cannot restart an external broker")
        assert self.url is not None
        self.supervisor.restart(BROKER)
        port = self.url.port
        wait_for(lambda: port_open(port), timeout, "the broker to listen again", self.supervisor)

    # parts --------------------------------------------------------------------------------
    def start_dispatcher(self, db: Path, extra: list[str]) -> None:
        """`fleetroom dispatcher` with its ledger in `db` (kept across a kill and restart)."""
        argv = fleetroom_command("dispatcher", *self.broker_flags(), "--db", str(db), *extra)
        self.supervisor.start(DISPATCHER, argv)

    def start_fleet(self, name: str, extra: list[str]) -> None:
        """One `fleetroom vehicles` process named `name`."""
        self.supervisor.start(name, fleetroom_command("vehicles", *self.broker_flags(), *extra))
        if name not in self.fleets:
            self.fleets.append(name)
