"""Real brokers for tests: embedded amqtt on port 0, or a mosquitto process with our config."""

from __future__ import annotations

import asyncio
import atexit
import functools
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from broker.embedded import BrokerSettings, EmbeddedBroker
from broker.mosquitto_config import build_plugin, write_mosquitto_config
from mqttlink import BrokerUrl
from protocol.identity import derive_password
from protocol.topics import Topics

MOSQUITTO_PROGRAMS = ("mosquitto", "mosquitto_pub", "mosquitto_sub", "stdbuf")
"""What the tests run to check the brokers from outside: Mosquitto, its clients, and `stdbuf` to read them live."""


def mosquitto_program(name: str = "mosquitto") -> str:
    """Where one of `MOSQUITTO_PROGRAMS` is; without it the test fails, never skips (`make test` installs it)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} is not installed: the tests need Debian's mosquitto and mosquitto-clients, "
                    "which `make test` installs (.ci/system-deps)", pytrace=False)
    return path


def require_mosquitto() -> None:
    """Fail the test now unless every one of `MOSQUITTO_PROGRAMS` is installed."""
    for name in MOSQUITTO_PROGRAMS:
        mosquitto_program(name)


@functools.cache
def built_plugin() -> Path:
    """The Mosquitto plugin, compiled once per test session (it takes about 0.3 s)."""
    out = Path(tempfile.mkdtemp(prefix="fleetroom-plugin-"))
    atexit.register(shutil.rmtree, out, True)
    return build_plugin(out)


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (for mosquitto, which cannot report port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _accepts(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    async with asyncio.timeout(timeout):
        while True:
            if await _accepts(port):
                return
            await asyncio.sleep(0.02)


@dataclass
class TestBroker:
    """A running broker as tests see it: where it is, its topic root, and how to log in."""

    __test__ = False  # not a test class, despite its name

    kind: str
    port: int
    topics: Topics
    secret: bytes | None
    _embedded: EmbeddedBroker | None = None
    _mosquitto: MosquittoProcess | None = None

    def url(self, username: str | None = None) -> BrokerUrl:
        """A URL for this broker, logged in as `username` with its derived password."""
        if username is None or self.secret is None:
            return BrokerUrl("127.0.0.1", self.port, username, None)
        return BrokerUrl("127.0.0.1", self.port, username, derive_password(self.secret, username))

    async def stop(self) -> None:
        if self._embedded is not None:
            await self._embedded.stop()
        if self._mosquitto is not None:
            await self._mosquitto.stop()

    async def start(self) -> None:
        if self._embedded is not None:
            await self._embedded.start()
        if self._mosquitto is not None:
            await self._mosquitto.start()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@dataclass
class MosquittoProcess:
    """A mosquitto child process with the config `fleetroom broker --write-mosquitto-config` writes."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None)

    async def start(self) -> None:
        program = mosquitto_program()
        with open(self.directory / "mosquitto.log", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [program, "-c", str(self.directory / "mosquitto.conf")], stdout=log, stderr=log
            )
        try:
            async with asyncio.timeout(10):
                while not await _accepts(self.port):
                    if self.process.poll() is not None:
                        break
                    await asyncio.sleep(0.02)
            if self.process.poll() is not None:  # refused its config, or something else answered on that port
                log_lines = (self.directory / "mosquitto.log").read_text(errors="replace").strip().splitlines()
                raise RuntimeError(f"mosquitto exited at once: {log_lines[-1] if log_lines else '(no log)'}")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)


@asynccontextmanager
async def embedded_broker(topics: Topics, secret: bytes | None = None) -> AsyncIterator[TestBroker]:
    """Embedded amqtt on 127.0.0.1 port 0; anonymous unless a secret is given."""
    settings = BrokerSettings(
        port=0, allow_anonymous=secret is None, secret=secret or b"", topic_prefix=topics.prefix
    )
    broker = EmbeddedBroker(settings)
    await broker.start()
    try:
        yield TestBroker("amqtt", broker.port, topics, secret, _embedded=broker)
    finally:
        await broker.stop()


@asynccontextmanager
async def mosquitto_broker(topics: Topics, directory: Path, secret: bytes | None = None) -> AsyncIterator[TestBroker]:
    """A real mosquitto on a free 127.0.0.1 port, secured by our plugin and generated files (or anonymous)."""
    port = free_port()
    if secret is not None:
        write_mosquitto_config(directory, secret, topics, port=port, plugin=built_plugin())
    else:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "mosquitto.conf").write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n"
        )
    proc = MosquittoProcess(directory, port)
    await proc.start()
    try:
        yield TestBroker("mosquitto", port, topics, secret, _mosquitto=proc)
    finally:
        await proc.stop()
