"""`fleetroom policy NAME`: the policy changes from the command line, and a refusal is one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleetroom.cli import main
from protocol import MatchPolicy
from tests.support.brokers import TestBroker
from tests.support.demo_loadtest import fleetroom_on
from tests.support.scripted_cars import Watcher, dispatcher_running
from tests.support.waiting import wait_until


async def run_policy(broker: TestBroker, *argv: str) -> tuple[int, str]:
    return await fleetroom_on(broker.port, broker.topics.prefix, "policy", *argv)


async def test_policy_is_refused_in_one_line_without_a_dispatcher_and_changed_with_one(
    amqtt_broker: TestBroker, tmp_path: Path
) -> None:
    code, out = await run_policy(amqtt_broker, "cheapest")
    assert code == 1, out
    assert out.strip().splitlines() == [f"fleetroom policy: error: no dispatcher is online under "
                                        f"{amqtt_broker.topics.prefix}/: policy cheapest not sent"]
    url, topics = amqtt_broker.url(), amqtt_broker.topics
    async with dispatcher_running(amqtt_broker, tmp_path / "l.sqlite"), Watcher(url, topics) as watch:
        await asyncio.wait_for(watch.summary_seen.wait(), 10)
        assert watch.summary is not None and watch.summary.policy is MatchPolicy.FASTEST
        code, out = await run_policy(amqtt_broker, "departure_aware")
        assert code == 0, out
        assert out.strip() == f"policy departure_aware sent to the dispatcher under {topics.prefix}/"
        await wait_until(lambda: watch.summary is not None and watch.summary.policy is MatchPolicy.DEPARTURE_AWARE,
                         what="the dispatcher's summary to name the new policy")


def test_an_unknown_policy_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["policy", "slowest", "--broker", "mqtt://127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "invalid choice: 'slowest'" in err, err
