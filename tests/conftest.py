"""Shared fixtures: a fresh topic root per test and real brokers on ephemeral ports."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol.topics import Topics
from tests.support.brokers import TestBroker, embedded_broker, mosquitto_broker

logging.getLogger("amqtt").setLevel(logging.WARNING)
logging.getLogger("transitions").setLevel(logging.WARNING)

TASK_DUMP_AFTER_S = 100.0  # pytest-timeout ends the run at 120 s with thread stacks only


def _dump_tasks(loop: asyncio.AbstractEventLoop, name: str) -> None:
    """What every task of a hung test's loop awaits: the thread dump shows only `select()`."""
    out = sys.__stderr__
    if out is None:
        return
    print(f"\n+++ {name} still running after {TASK_DUMP_AFTER_S:.0f} s; its asyncio tasks: +++", file=out)
    for task in list(asyncio.all_tasks(loop)):
        print(f"--- {task!r}", file=out)
        task.print_stack(limit=12, file=out)
    out.flush()


@pytest.fixture(autouse=True)
async def _tasks_dumped_if_hung(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Diagnostics only: a hang in CI should say where each coroutine was waiting."""
    timer = threading.Timer(TASK_DUMP_AFTER_S, _dump_tasks, (asyncio.get_running_loop(), request.node.nodeid))
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


@pytest.fixture
def topics() -> Topics:
    """A topic root no other test uses."""
    return Topics(f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def amqtt_broker(topics: Topics) -> AsyncIterator[TestBroker]:
    """An anonymous embedded amqtt broker on 127.0.0.1, port 0."""
    async with embedded_broker(topics) as broker:
        yield broker


@pytest.fixture(params=["amqtt", "mosquitto"])
async def any_broker(request: pytest.FixtureRequest, topics: Topics, tmp_path: Path) -> AsyncIterator[TestBroker]:
    """The same test on anonymous embedded amqtt and on a real mosquitto process."""
    if request.param == "amqtt":
        async with embedded_broker(topics) as broker:
            yield broker
    else:  # without mosquitto installed, the test fails (`mosquitto_program`), never skips
        async with mosquitto_broker(topics, tmp_path / "mosquitto") as broker:
            yield broker


SECRET = b"test-fleet-secret"


@pytest.fixture(params=["amqtt", "mosquitto"])
async def secure_broker(request: pytest.FixtureRequest, topics: Topics, tmp_path: Path) -> AsyncIterator[TestBroker]:
    """A broker enforcing fleet auth and ACL: the amqtt plugins, or mosquitto with our plugin."""
    if request.param == "amqtt":
        async with embedded_broker(topics, SECRET) as broker:
            yield broker
    else:
        async with mosquitto_broker(topics, tmp_path / "mosquitto", SECRET) as broker:
            yield broker
