"""The client helper: broker URLs, backoff with jitter, unique ids, one-line errors."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqttlink import (
    Backoff,
    BrokerUnreachable,
    BrokerUrl,
    BrokerUrlError,
    broker_url_from,
    cancel_and_wait,
    check_broker,
    client_id_of,
    new_client_id,
    parse_broker_url,
    stay_connected,
)
from protocol import check_level
from protocol.identity import owns_client_id
from protocol.topics import TopicError
from tests.support.brokers import free_port


def test_parse_full_url() -> None:
    url = parse_broker_url("mqtt://car-1:p%40ss@127.0.0.1:18830")
    assert url == BrokerUrl("127.0.0.1", 18830, "car-1", "p@ss")
    assert str(url) == "mqtt://car-1@127.0.0.1:18830"  # never prints the password
    assert parse_broker_url(url.full()) == url


def test_defaults() -> None:
    assert parse_broker_url("mqtt://localhost") == BrokerUrl("localhost", 1883)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("http://h:1", "scheme must be mqtt"), ("mqtt://", "no host"), ("mqtt://h:99999", "bad broker URL"),
     ("mqtt://h:1/path", "only mqtt://"), ("mqtt://h:0", "port 0"), ("h:1883", "scheme")],
)
def test_bad_urls_name_the_problem(text: str, needle: str) -> None:
    with pytest.raises(BrokerUrlError, match=needle) as info:
        parse_broker_url(text)
    assert "\n" not in str(info.value)


def test_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETROOM_BROKER", "mqtt://127.0.0.1:1999")
    assert broker_url_from(None) == BrokerUrl("127.0.0.1", 1999)
    assert broker_url_from("mqtt://127.0.0.1:2000") == BrokerUrl("127.0.0.1", 2000)
    monkeypatch.delenv("FLEETROOM_BROKER")
    assert broker_url_from(None) is None


@given(st.integers(0, 2**32))
def test_backoff_grows_with_jitter_and_stays_capped(seed: int) -> None:
    backoff = Backoff(initial_s=0.1, max_s=2.0, rng=random.Random(seed))
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(0.05 <= d <= 2.0 for d in delays)
    assert delays[-1] >= 1.0  # reached the cap's range
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_client_ids_are_unique_and_owned_by_their_user() -> None:
    ids = {new_client_id("dispatcher") for _ in range(1000)}
    assert len(ids) == 1000
    for cid in ids:
        name, _, suffix = cid.partition(":")
        assert name == "dispatcher" and len(suffix) == 12 and owns_client_id("dispatcher", cid)
        assert not owns_client_id("dispatcher2", cid) and not owns_client_id("dispatch", cid)
    cid = next(iter(ids))
    with pytest.raises(TopicError):
        check_level(cid)  # a client id is not a topic level: topics are named by user name
    assert client_id_of(BrokerUrl("h", 1, "car-aa", "pw"), "probe").startswith("car-aa:")
    assert client_id_of(BrokerUrl("h", 1), "probe").startswith("probe:")  # anonymous: the role word


async def test_unreachable_broker_is_one_clear_line() -> None:
    url = BrokerUrl("127.0.0.1", free_port())
    with pytest.raises(BrokerUnreachable) as info:
        await check_broker(url, timeout=3)
    assert str(info.value) == f"cannot reach the MQTT broker at {url}: connection refused (is it running?)"


async def test_stay_connected_fails_loud_when_the_first_connection_fails() -> None:
    async def session(client: object) -> None:
        raise AssertionError("never connected")

    with pytest.raises(BrokerUnreachable, match="connection refused"):
        await stay_connected(BrokerUrl("127.0.0.1", free_port()), new_client_id("t"), session)  # type: ignore[arg-type]


async def _acknowledged_then_serving(ack: asyncio.Future[int]) -> None:
    """What a client task does: wait for a PUBACK (aiomqtt uses wait_for), then serve forever."""
    await asyncio.wait_for(ack, timeout=10)
    await asyncio.Event().wait()


async def test_cancel_and_wait_ends_a_task_that_swallowed_its_cancellation() -> None:
    loop = asyncio.get_running_loop()
    ack: asyncio.Future[int] = loop.create_future()
    task = asyncio.create_task(_acknowledged_then_serving(ack))
    await asyncio.sleep(0)  # the task is now inside wait_for
    ack.set_result(1)  # the PUBACK arrives in the same loop iteration as the cancellation
    async with asyncio.timeout(5):
        errors = await cancel_and_wait(task)
    assert task.cancelled() and errors == []


async def test_cancel_and_wait_returns_what_the_tasks_failed_with() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    failing, finished = asyncio.create_task(fails()), asyncio.create_task(asyncio.sleep(0))
    await asyncio.wait({failing, finished})
    errors = await cancel_and_wait(failing, finished)
    assert [str(e) for e in errors] == ["boom"]
