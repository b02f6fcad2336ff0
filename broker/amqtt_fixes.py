"""Three fixes to amqtt 0.12.1 (pinned), kept in one place so an upgrade is checked here.

1. On every new connection amqtt sends the new client the retained messages matching *every*
   client's subscription filters, not its own, and without asking the ACL plugins: a car would
   receive other cars' retained statuses and every job state, and a dashboard would receive
   each retained message several times. `FleetBroker` sends retained messages only for
   filters the session itself holds.
2. amqtt iterates its subscription map across `await`s (on connect and on broadcast), so a
   subscription made meanwhile raises "dictionary changed size during iteration". The map is
   replaced by one that iterates over a snapshot.
3. To stop a connection amqtt cancels its reader task once and waits for it to say it stopped.
   The reader reads through `asyncio.wait_for`, which on Python 3.11 drops a cancellation that
   lands as a packet arrives (CPython gh-86296): the reader reads on, and the broker's shutdown
   or restart waits for ever. `FleetBroker` cancels the reader until it has really ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import ItemsView, Iterator
from typing import Any

from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from mqttlink.tasks import cancel_and_wait

READER_RECANCEL_AFTER_S = 1.0  # long enough for a reader's own clean-up after the first cancel


class SnapshotDict(dict[str, Any]):
    """A dict whose iteration and `items()` walk a copy, so it may change while they run."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]  # a copy's view
        return dict(super().items()).items()


class FleetBroker(Broker):
    """amqtt's broker with the three fixes above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = SnapshotDict()  # private attribute of amqtt's Broker: see fix 2

    def _holds(self, session: Session, topic_filter: str) -> bool:
        subscribers = self._subscriptions.get(topic_filter, ())
        return any(sub.client_id == session.client_id for sub, _qos in subscribers)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        if not self._holds(session, subscription[0]):
            return  # fix 1: another client's filter
        await super()._publish_retained_messages_for_subscription(subscription, session)

    async def _stop_handler(self, handler: BrokerProtocolHandler) -> None:
        reader = handler._reader_task  # private attribute of amqtt's handler: see fix 3
        if reader is not None and reader is not asyncio.current_task():
            await cancel_and_wait(reader, recancel_after=READER_RECANCEL_AFTER_S)
        await super()._stop_handler(handler)
