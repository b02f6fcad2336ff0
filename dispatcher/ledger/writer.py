"""The ledger's bulk writes (standing offers, owner modes, refusal counts, the clock) on a thread of their own.

The writer has its own connection to the ledger's file (WAL), and runs the batches it is handed
in order, each in one transaction; sqlite3 lets go of the GIL while SQLite works, so the event
loop's thread goes on meanwhile. At most one batch is in flight: handing a new one first waits
for the last, so a kill -9 loses at most the batch being written and what was heard since, as
when the loop wrote them itself. `wait` returns once every batch handed before it is written:
the ledger calls it before the loop reads or writes what a batch may touch, before a report on
another connection, and on close. A batch that fails makes every later `wait` raise its error.
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

    def wait(self) -> None:
        """Return once every batch handed so far is written (at once if they are); raise if one failed."""
        target = self._handed
        if self._done < target:
            with self._changed:
                self._changed.wait_for(lambda: self._done >= target)
        if self._error is not None:
            raise LedgerWriterError(f"a bulk ledger write failed: {self._error!r}") from self._error

    def close(self) -> None:
        """Write what was handed, then stop the thread and close its connection."""
        if not self._thread.is_alive():
            return
        with self._changed:
            self._queue.append(None)
            self._changed.notify_all()
        self._thread.join()
        self._db.close()
        if self._error is not None:
            raise LedgerWriterError(f"a bulk ledger write failed: {self._error!r}") from self._error

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue))
                work = self._queue.popleft()
            if work is None:
                return
            try:
                if self._error is None:  # after a failure nothing more is written: the next wait raises
                    self._write(work)
            except BaseException as exc:  # kept, and raised on the loop's next wait
                self._error = exc
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
