"""Brokers serving TLS only, and Mosquitto's own clients to talk to them, for the TLS tests.

With a fleet secret, Mosquitto runs the config `fleetroom broker --write-mosquitto-config --tls`
writes (the fleetroom plugin, and `broker.tls.mosquitto_tls_lines` on the listener); without one,
those TLS lines with `allow_anonymous true`.
"""

from __future__ import annotations

import asyncio
import getpass
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from broker.embedded import BrokerSettings, EmbeddedBroker
from broker.mosquitto_config import write_mosquitto_config
from broker.tls import TlsFiles, ensure_server_files, mosquitto_tls_lines
from mqttlink import BrokerUrl
from protocol.identity import client_id_for, derive_password
from protocol.topics import Topics
from tests.support.brokers import MosquittoProcess, built_plugin, free_port

SUB, PUB, STDBUF = "mosquitto_sub", "mosquitto_pub", "stdbuf"  # found on $PATH; `require_mosquitto` checks
SECRET = b"tls-test-secret"
KINDS = ["amqtt", "mosquitto"]


@dataclass
class TlsBroker:
    """A broker serving TLS only, as the tests see it."""

    kind: str
    port: int
    files: TlsFiles
    secret: bytes | None

    def url(self, user: str | None = None, *, cert: Path | None = None, ca: Path | None = None) -> BrokerUrl:
        password = derive_password(self.secret, user) if user and self.secret else None
        return BrokerUrl("127.0.0.1", self.port, user, password, tls=True, ca_file=str(ca or self.files.ca_cert),
                         client_cert=str(cert) if cert else None)

    def client_flags(self, user: str | None = None, cert_for: str | None = None) -> list[str]:
        """mosquitto_pub/sub flags: this broker, its CA, a login and a client certificate."""
        flags = ["-h", "127.0.0.1", "-p", str(self.port), "--cafile", str(self.files.ca_cert), "-V", "mqttv311"]
        if user:  # a client id of the user's own (the secured brokers accept no other)
            password = derive_password(self.secret, user) if self.secret else "x"
            flags += ["-i", client_id_for(user), "-u", user, "-P", password]
        if cert_for:
            clients = self.files.clients
            flags += ["--cert", str(clients / f"{cert_for}.crt"), "--key", str(clients / f"{cert_for}.key")]
        return flags


@asynccontextmanager
async def tls_broker(kind: str, topics: Topics, directory: Path, *, secret: bytes | None = None,
                     require_client_cert: bool = False) -> AsyncIterator[TlsBroker]:
    """Embedded amqtt with TLS, or mosquitto with `mosquitto_tls_lines`; secured by the fleet secret if given."""
    files, _ = ensure_server_files(directory / "tls")
    if kind == "amqtt":
        settings = BrokerSettings(port=0, allow_anonymous=secret is None, secret=secret or b"",
                                  topic_prefix=topics.prefix, tls=files, require_client_cert=require_client_cert)
        async with EmbeddedBroker(settings) as embedded:
            yield TlsBroker(kind, embedded.port, files, secret)
        return
    port = free_port()
    tls_lines = mosquitto_tls_lines(files, require_client_cert=require_client_cert)
    if secret is not None:
        write_mosquitto_config(directory, secret, topics, port=port, extra_lines=tls_lines, plugin=built_plugin())
    else:
        lines = [f"listener {port} 127.0.0.1", *tls_lines, f"user {getpass.getuser()}", "allow_anonymous true",
                 "persistence false"]
        (directory / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    proc = MosquittoProcess(directory, port)
    await proc.start()
    try:
        yield TlsBroker(kind, port, files, secret)
    finally:
        await proc.stop()


async def run_tool(tool: str | None, *args: str, timeout: float = 15.0) -> tuple[int, str]:
    """Run mosquitto_pub (or another client) to its end: exit code and output."""
    assert tool is not None
    proc = await asyncio.create_subprocess_exec(tool, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode()


class Subscriber:
    """mosquitto_sub over TLS, printing `topic payload` lines; `start` returns once the broker acknowledged."""

    def __init__(self, flags: list[str], *filters: str) -> None:
        self.args = [*flags, "-v", "-d", "-q", "1", *(a for f in filters for a in ("-t", f))]
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []

    async def start(self) -> Subscriber:
        # line-buffered, or mosquitto_sub's debug lines (the SUBACK) would wait in its stdio buffer
        self.proc = await asyncio.create_subprocess_exec(STDBUF, "-oL", SUB, *self.args, stdout=subprocess.PIPE,
                                                         stderr=subprocess.STDOUT)
        await self.until(lambda line: "SUBACK" in line, "mosquitto_sub's SUBACK")
        return self

    async def until(self, match: Callable[[str], bool], what: str, timeout: float = 15.0) -> str:
        """The first line that matches, reading on until one does; fail with all lines read if none does in time."""
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.lines:
            if match(line):
                return line
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self.proc.stdout.readline()
                    if not raw:
                        raise AssertionError(f"mosquitto_sub ended before {what}: {self.lines}")
                    line = raw.decode().rstrip()
                    self.lines.append(line)
                    if match(line):
                        return line
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}: {self.lines}") from None

    def received(self) -> list[str]:
        return [line for line in self.lines if not line.startswith("Client ")]

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


@asynccontextmanager
async def subscribed(flags: list[str], *filters: str) -> AsyncIterator[Subscriber]:
    sub = await Subscriber(flags, *filters).start()
    try:
        yield sub
    finally:
        await sub.stop()
