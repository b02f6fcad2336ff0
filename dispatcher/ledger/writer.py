"""The ledger's bulk writes (standing offers, owner modes, refusal counts, the clock) on a thread of their own.

The writer has its own connection to the ledger's file (WAL), and runs the batches it is handed
in order, each in one transaction; sqlite3 lets go of the GIL while SQLite works, so the event
loop's thread goes on meanwhile. At most one batch is in flight: handing a new one first waits
for the last, so a kill -9 loses at most the batch being written and what was heard since, as
when the loop wrote them itself. `wait` returns once every batch handed before it is written:
the ledger calls it before the loop reads or writes what a batch may touch, before a report on
another connection, and on close. A batch that fails is rolled back and its error raised once, by
the next `wait` on the loop: that step is lost and the next ones are written, as when the loop
wrote them itself (the service logs and counts a failed step, and goes on).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from dispatcher.ledger.schema import open_ledger_file

Work = Callable[[sqlite3.Connection], None]


class LedgerWriterError(RuntimeError):
    """A batch handed to the ledger's writer failed: the ledger no longer holds what the loop wrote."""


class Writer:
    """One thread and one connection that write the batches handed to them, in order."""

    def __init__(self, path: Path | str) -> None:
        self._db = open_ledger_file(path)
        self._queue: deque[Work | None] = deque()
        self._changed = threading.Condition()
        self._handed = self._done = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def hand(self, work: Work) -> None:
        """Write `work` in a transaction of its own, after the batches handed before it (waits for the last)."""
        self.wait()
        with self._changed:
            self._handed += 1
            self._queue.append(work)
            self._changed.notify_all()

    def busy(self) -> bool:
        """Whether a batch handed is still being written."""
        return self._done < self._handed

    def wait(self, *, raise_error: bool = True) -> None:
        """Return once every batch handed so far is written (at once if they are); raise the error of one that
        failed since the last raise, unless told not to (a thread other than the loop's)."""
        target = self._handed
        if self._done < target:
            with self._changed:
                self._changed.wait_for(lambda: self._done >= target)
        if raise_error and self._error is not None:
            self._raise()

    def _raise(self) -> None:
        with self._changed:
            error, self._error = self._error, None
        if error is not None:
            raise LedgerWriterError(f"a bulk ledger write failed: {error!r}") from error

    def close(self) -> None:
        """Write what was handed, then stop the thread and close its connection."""
        if not self._thread.is_alive():
            return
        with self._changed:
            self._queue.append(None)
            self._changed.notify_all()
        self._thread.join()
        self._db.close()
        self._raise()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue))
                work = self._queue.popleft()
            if work is None:
                return
            try:
                self._write(work)
            except BaseException as exc:  # raised on the loop's next wait (the first one, if several failed)
                self._error = self._error or exc
            finally:
                with self._changed:
                    self._done += 1
                    self._changed.notify_all()

    def _write(self, work: Work) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            work(self._db)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
