"""Two fixes to amqtt 0.12.1 (pinned), kept in one place so an upgrade is checked here.

1. On every new connection amqtt sends the new client the retained messages matching *every*
   client's subscription filters, not its own, and without asking the ACL plugins: a car would
   receive other cars' retained statuses and every job state, and a dashboard would receive
   each retained message several times. `FleetBroker` sends retained messages only for
   filters the session itself holds.
2. amqtt iterates its subscription map across `await`s (on connect and on broadcast), so a
   subscription made meanwhile raises "dictionary changed size during iteration". The map is
   replaced by one that iterates over a snapshot.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator
from typing import Any

from amqtt.broker import Broker
from amqtt.session import Session


class SnapshotDict(dict[str, Any]):
    """A dict whose iteration and `items()` walk a copy, so it may change while they run."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]  # a copy's view
        return dict(super().items()).items()


class FleetBroker(Broker):
    """amqtt's broker with the two fixes above."""

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
