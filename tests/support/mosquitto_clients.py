"""Mosquitto's own command-line clients, logged in as a fleet user: the outsiders the security tests use."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from tests.support.brokers import TestBroker, mosquitto_program
from tests.support.waiting import wait_until


def login_args(broker: TestBroker, user: str, client_id: str | None = None, password: str | None = None) -> list[str]:
    """Connection flags for mosquitto_pub/sub as `user` (its derived password unless one is given)."""
    client_id = client_id or f"{user}:{secrets.token_hex(4)}"
    args = ["-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv311", "-i", client_id]
    password = password if password is not None else broker.url(user).password
    return args if password is None else [*args, "-u", user, "-P", password]  # no password: an anonymous broker


async def mosquitto_pub(broker: TestBroker, user: str, *args: str, client_id: str | None = None,
                        password: str | None = None, stdin: bytes | None = None) -> int:
    """Run mosquitto_pub as `user` (QoS 1); its exit code (0: logged in and published)."""
    argv = [mosquitto_program("mosquitto_pub"), *login_args(broker, user, client_id, password), "-q", "1", *args]
    proc = await asyncio.to_thread(subprocess.run, argv, input=stdin, capture_output=True, timeout=20)
    return proc.returncode


class Subscriber:
    """A running mosquitto_sub: every line it printed, and the `topic payload` ones among them."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.subscribed = False

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.subscribed = self.subscribed or line.startswith("Subscribed (mid:")
            self.lines.append(line)

    def messages(self) -> list[tuple[str, str]]:
        """(topic, payload) of every message received, without mosquitto_sub's debug lines."""
        return [(line.split(" ", 1)[0], line.split(" ", 1)[1]) for line in self.lines
                if " " in line and not line.startswith(("Client ", "Subscribed"))]

    def got(self, topic: str, payload: str) -> bool:
        return f"{topic} {payload}" in self.lines

    def under(self, prefix: str) -> list[tuple[str, str]]:
        return [(t, p) for t, p in self.messages() if t.startswith(prefix + "/")]


@asynccontextmanager
async def mosquitto_sub(broker: TestBroker, user: str, *filters: str, client_id: str | None = None,
                        extra: Sequence[str] = ()) -> AsyncIterator[Subscriber]:
    """A mosquitto_sub child logged in as `user`, subscribed to `filters`, printing `topic payload`."""
    argv = [mosquitto_program("stdbuf"), "-oL", mosquitto_program("mosquitto_sub"),
            *login_args(broker, user, client_id), "-d", "-v", "-q", "1", *extra]
    for topic_filter in filters:
        argv += ["-t", topic_filter]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, limit=1 << 22)
    sub = Subscriber(proc)
    reader = asyncio.create_task(sub.read())
    try:
        await wait_until(lambda: sub.subscribed, what=f"{user}'s mosquitto_sub to subscribe")
        yield sub
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await reader
