"""The dispatcher's loop watch: a stalled event loop is logged with the step it is stuck in."""

from __future__ import annotations

import asyncio
import logging
import threading

from dispatcher.loop_watch import LoopWatch


class _Released(logging.Handler):
    """Releases the stuck step once the watch said where it is, and keeps what was said."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self.released, self.said = release, []  # type: ignore[var-annotated]

    def emit(self, record: logging.LogRecord) -> None:
        self.said.append(record.getMessage())
        if "has not run" in record.getMessage():
            self.released.set()


def stuck_step(release: threading.Event) -> None:
    """A step that holds the loop until the watch has reported it (or 10 s, then the test fails)."""
    assert release.wait(10.0), "the watch never reported the stalled loop"


def test_a_stalled_loop_is_logged_with_its_stack_and_its_length() -> None:
    release = threading.Event()
    handler = _Released(release)
    logger = logging.getLogger("dispatcher.loop_watch")
    logger.addHandler(handler)

    async def main() -> LoopWatch:
        watch = LoopWatch(threshold_s=0.3)
        watch.start()
        try:
            await asyncio.sleep(0)
            stuck_step(release)  # the loop stands here
            for _ in range(200):  # the watch notices the loop ran again
                if watch.stalls.longest_s > 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            watch.close()
        return watch

    try:
        watch = asyncio.run(main())
    finally:
        logger.removeHandler(handler)
    stalled = [text for text in handler.said if "has not run" in text]
    assert len(stalled) == 1 and "stuck_step" in stalled[0]  # the step that holds the loop, by name
    assert watch.stalls.count == 1 and watch.stalls.where[0].endswith("stuck_step")
    assert watch.stalls.longest_s >= 0.3
    assert any("ran again after standing" in text for text in handler.said)


def test_a_loop_that_keeps_turning_is_never_reported() -> None:
    async def main() -> LoopWatch:
        watch = LoopWatch(threshold_s=0.5)
        watch.start()
        try:
            for _ in range(20):
                await asyncio.sleep(0.05)
        finally:
            watch.close()
        return watch

    watch = asyncio.run(main())
    assert watch.stalls.count == 0 and watch.stalls.longest_s == 0.0
