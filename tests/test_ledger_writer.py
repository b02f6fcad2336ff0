"""The ledger's bulk writes on a writer thread: the loop sees what it wrote, a restart finds it, failures surface.

Timings are in bench/dispatcher_ingest.py; here only behaviour, on real SQLite files.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dispatcher.ledger import Ledger
from dispatcher.ledger import earnings as book
from dispatcher.ledger.writer import LedgerWriterError
from protocol import OwnerMode
from tests.test_dispatcher_money import Money

ROOT = Path(__file__).resolve().parent.parent
CARS = 20_000  # enough that the writer is still at it when the child closes its ledger

CHILD = f"""
import sys
from dispatcher.ledger import Ledger
from protocol import OwnerMode
ledger = Ledger(sys.argv[1])
rows = [(f"car-{{i:05d}}", "o1", "HW5", 1000.0 + i / 7, 0.03, 1.5, 9e3 + i / 3, 0.9, 12.5, 0.8, 0.02,
         None if i % 2 else 2.0, None, 36000.1) for i in range({CARS})]
with ledger.bulk():
    ledger.save_offers(rows, [])
    ledger.set_owner_modes([(row[0], "owner-1", OwnerMode.COMPUTE) for row in rows], 100.0)
    ledger.add_rejections({{"bad_payload": 3}})
    ledger.save_clock(100.0, 1.7e9)
ledger.set_owner_modes([("car-00007", "owner-1", OwnerMode.ROBOTAXI)], 160.0)  # after the batch above
ledger.save_offers([], ["car-00003"])
ledger.close()  # no wait here: close writes what was handed
"""


def test_a_restart_finds_every_bulk_write_handed_to_the_writer_before_close(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    subprocess.run([sys.executable, "-c", CHILD, str(db)], cwd=ROOT, check=True, timeout=120)
    again = Ledger(db)
    offers = {row[0]: row for row in again.standing_offers()}
    assert len(offers) == CARS - 1 and "car-00003" not in offers
    i = 12_345
    assert offers[f"car-{i:05d}"] == (f"car-{i:05d}", "o1", "HW5", 1000.0 + i / 7, 0.03, 1.5, 9e3 + i / 3, 0.9,
                                      12.5, 0.8, 0.02, None, None, 36000.1)  # the same doubles, NULLs kept
    assert offers["car-00010"][11] == 2.0
    assert book.counts(again.db) == (CARS, 1)
    assert book.car_money(again.db, "car-00007").owner_mode is OwnerMode.ROBOTAXI  # type: ignore[union-attr]
    seconds = again.db.execute("SELECT seconds FROM mode_money WHERE vehicle_id = 'car-00007'").fetchone()
    assert seconds == (60.0,)  # the stretch in compute, closed by the later batch
    assert again.rejections() == {"bad_payload": 3} and again.last_clock() == (100.0, 1.7e9)
    again.close()


def test_bulk_writes_run_on_the_writer_thread_and_the_loop_then_sees_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = Money(tmp_path / "ledger.sqlite")
    threads: list[str] = []
    set_modes = book.set_modes

    def recording(*args: object) -> None:
        threads.append(threading.current_thread().name)
        set_modes(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(book, "set_modes", recording)
    m.ledger.set_owner_modes([("car-a", "owner-1", OwnerMode.ROBOTAXI)], 10.0)
    assert book.car_money(m.ledger.db, "car-a").owner_mode is OwnerMode.ROBOTAXI  # type: ignore[union-attr]
    assert threads == ["ledger-writer"]


def test_a_new_batch_waits_for_the_one_in_flight(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    release, started = threading.Event(), threading.Event()

    def slow(_: object) -> None:
        started.set()
        release.wait(30)

    ledger._write(slow)  # as a bulk write: handed to the writer
    assert started.wait(10)
    handed = threading.Event()

    def hand_another() -> None:
        ledger.save_clock(1.0, 2.0)
        handed.set()

    second = threading.Thread(target=hand_another)
    second.start()
    assert not handed.wait(0.3)  # at most one batch in flight: a crash loses no more than it
    release.set()
    second.join(10)
    assert handed.is_set() and ledger.last_clock() == (1.0, 2.0)
    ledger.close()


def test_a_failed_bulk_write_is_rolled_back_and_raised_once_on_the_loop_and_the_next_ones_are_written(
        tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")

    def broken(db: sqlite3.Connection) -> None:
        db.execute("INSERT OR REPLACE INTO clock VALUES (1, 9.0, 9.0)")
        raise ValueError("disk on fire")

    ledger._write(broken)
    assert ledger.reader() is not None  # another thread's wait leaves the error to the loop
    with pytest.raises(LedgerWriterError, match="disk on fire"):
        ledger.save_clock(1.0, 2.0)  # handing a batch waits for the failed one, and raises: that step is lost
    assert ledger.last_clock() is None  # the failed batch was rolled back
    ledger.save_clock(3.0, 4.0)  # the next step is written
    ledger.close()
    assert Ledger(tmp_path / "ledger.sqlite").last_clock() == (3.0, 4.0)


def test_a_tick_whose_writer_is_busy_keeps_its_batch_for_the_next_one_and_a_read_still_sees_both(
        tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    release, started = threading.Event(), threading.Event()
    transactions: list[int] = []

    def slow(db: sqlite3.Connection) -> None:
        started.set()
        release.wait(30)

    ledger._write(slow)  # the writer is busy with it
    assert started.wait(10)
    done = threading.Event()

    def two_ticks() -> None:
        with ledger.bulk():  # kept, not handed: the tick does not wait for the writer
            ledger.set_owner_modes([("car-a", "owner-1", OwnerMode.COMPUTE)], 10.0)
        with ledger.bulk():
            ledger.add_rejections({"bad_payload": 2})
        done.set()

    tick = threading.Thread(target=two_ticks)
    tick.start()
    assert done.wait(10) and not release.is_set()  # both ticks ended while the writer was still busy
    assert ledger._writer is not None and ledger._kept_blocks == 2
    with ledger.bulk():  # the writer is free now, so a third tick hands all three, in one transaction
        release.set()
        ledger._writer.wait()
        transactions.append(ledger._writer._done)
        ledger.save_clock(5.0, 6.0)
    assert ledger._kept == [] and ledger._writer._handed == transactions[0] + 1
    assert book.car_money(ledger.db, "car-a").owner_mode is OwnerMode.COMPUTE  # type: ignore[union-attr]
    assert ledger.rejections() == {"bad_payload": 2} and ledger.last_clock() == (5.0, 6.0)
    tick.join(10)
    ledger.close()


def test_kept_batches_are_handed_before_a_read_and_on_close(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    release = threading.Event()
    ledger._write(lambda db: release.wait(30) and None)
    with ledger.bulk():
        ledger.add_rejections({"bad_payload": 1})
    assert ledger._kept_blocks == 1  # the writer was busy
    release.set()
    assert ledger.rejections() == {"bad_payload": 1}  # the read handed it and waited
    with ledger.bulk():
        ledger.save_clock(7.0, 8.0)
    ledger.close()
    assert Ledger(tmp_path / "ledger.sqlite").last_clock() == (7.0, 8.0)
