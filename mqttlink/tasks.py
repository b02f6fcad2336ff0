"""Ending tasks that talk MQTT: cancel, and cancel again until they are really gone.

On Python 3.11, `asyncio.wait_for` returns the result instead of raising `CancelledError` when
the awaited operation completes in the same loop iteration as the cancellation (CPython
gh-86296, fixed in 3.12). aiomqtt waits for every QoS 1 PUBACK and SUBACK through `wait_for`,
so a task cancelled once while a publish is being acknowledged can swallow the cancellation,
carry on into `async for client.messages` and never end; whoever awaited it then hangs. The
tests met this as a one-in-ten hang of a scripted car that published twice on its way out.
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_AFTER_S = 0.2


async def cancel_and_wait(*tasks: asyncio.Future[Any], recancel_after: float = RECANCEL_AFTER_S) -> list[BaseException]:
    """Cancel `tasks` and wait until every one has ended, cancelling again any that carried on.

    Returns the exceptions the tasks ended with (not counting cancellation), so that nothing is
    reported as "never retrieved" and the caller can still log or re-raise them.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recancel_after)
    errors = []
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            errors.append(error)
    return errors
