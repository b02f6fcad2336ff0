"""A watch on the dispatcher's event loop: a stall is logged with where the loop was stuck.

The dispatcher serves a million cars on one event loop; while a step of it runs for seconds,
nothing is read, published or acknowledged, and a broker times the connections out after one
and a half keepalives. A thread beside the loop looks at a heartbeat the loop sets a few times
a second; once the beat is `threshold_s` old it logs the loop thread's stack (the step that is
stuck, not a guess), and when the loop comes back, how long it stood. Garbage collections that
take longer than `threshold_s` are logged as such: they stop the loop at whatever line
allocated last, so their stack alone would mislead.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger(__name__)

BEAT_S = 0.25  # how often the loop says it is alive
THRESHOLD_S = 2.0  # a loop that did not beat for so long is stalled


@dataclass(slots=True)
class Stalls:
    """What the watch saw: stalls and long collections, with the longest of each."""

    count: int = 0
    longest_s: float = 0.0
    collections: int = 0  # garbage collections longer than the threshold
    longest_collection_s: float = 0.0
    where: list[str] = field(default_factory=list)  # the innermost frame of each stall, oldest first (at most 20)


class LoopWatch:
    """Watch the running loop from a daemon thread (`start` inside the loop, `close` when done)."""

    def __init__(self, threshold_s: float = THRESHOLD_S) -> None:
        self.threshold_s = threshold_s
        self.stalls = Stalls()
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._gc_started = 0.0

    def start(self) -> None:
        """Begin watching the loop that runs this call."""
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beating())
        gc.callbacks.append(self._on_collection)
        self._thread = threading.Thread(target=self._watch, name="loop-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)
        if self._task is not None:
            self._task.cancel()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    async def _beating(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(BEAT_S)

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self._loop_thread:
            return
        if phase == "start":
            self._gc_started = time.monotonic()
            return
        took = time.monotonic() - self._gc_started
        if took >= self.threshold_s:
            self.stalls.collections += 1
            self.stalls.longest_collection_s = max(self.stalls.longest_collection_s, took)
            log.warning("a garbage collection of generation %d took %.1f s (%d objects collected)",
                        info.get("generation", -1), took, info.get("collected", 0))

    def _watch(self) -> None:
        reported_beat = None  # the beat of the stall already reported
        while not self._closed.wait(BEAT_S):
            beat = self._beat
            stood = time.monotonic() - beat
            if reported_beat is not None and beat != reported_beat:
                took = beat - reported_beat
                self.stalls.longest_s = max(self.stalls.longest_s, took)
                log.warning("the event loop ran again after standing %.1f s", took)
                reported_beat = None
            if stood < self.threshold_s or reported_beat is not None:
                continue
            reported_beat = beat
            frame = sys._current_frames().get(self._loop_thread)
            stack = "".join(traceback.format_stack(frame, limit=12)) if frame is not None else "(no frame)\n"
            self.stalls.count += 1
            if frame is not None and len(self.stalls.where) < 20:
                self.stalls.where.append(_own_frame(frame))
            log.warning("the event loop has not run for %.1f s; it is in:\n%s", stood, stack.rstrip())


def _own_frame(frame: FrameType) -> str:
    """The innermost frame of the program's own code (not Python's library nor an installed package)."""
    libraries = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    innermost = frame
    walking: FrameType | None = frame
    while walking is not None and walking.f_code.co_filename.startswith(libraries):
        walking = walking.f_back
    chosen = walking or innermost
    return f"{chosen.f_code.co_filename}:{chosen.f_lineno} {chosen.f_code.co_name}"
