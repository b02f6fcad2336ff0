"""The job ledger in SQLite (WAL): jobs, shards, replica slots, assignments, cars and totals.

Every incoming event is applied in one transaction, and only if the assignment it names is
still active, so a duplicate QoS 1 delivery, or a message replayed after a kill -9 and restart,
changes nothing the second time. A replica *slot* is one line of execution of a shard; an
assignment is one attempt of a slot on one car. A preempted attempt puts its slot back to
waiting with the checkpoint it handed back. Times (`assigned_at`, `heard_at`) are the
dispatcher's simulation seconds, and rejected claims are counted by reason in `rejections`.
All of the dispatcher's SQL is in this package, behind the methods of `Ledger`.

The bulk writes of each tick (standing offers, owner modes, refusal counts, the clock) go to a
writer thread with its own connection (`dispatcher.ledger.writer`), one transaction per tick
(`bulk`); the loop's connection (`db`) first waits for them, so the loop always sees what it
wrote. Reads of the job tables, which the writer never touches, do not wait (`_db`). While the
writer is still at the last batch, a tick's batch is kept and handed with the next one, as one
transaction (up to `MAX_KEPT_BATCHES`): a million cars' rows land at random places of their
tables, and each commit rewrites every page it touched, so 40,000 owner modes in one commit cost
half as much per car as ten commits of 4,000 (the writer then keeps up with a fleet joining).
Kept blocks are handed before the loop reads or writes through `db` and on close; a report on its
own connection (`reader`) sees what was handed. Blocks written together fail together.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dispatcher.credit import Moment
from dispatcher.ledger import earnings, job_events, offer_book, result_events, rows, shard_events
from dispatcher.ledger.accounts import count_rejection
from dispatcher.ledger.reports import job_report
from dispatcher.ledger.schema import open_ledger_file
from dispatcher.ledger.writer import Writer
from dispatcher.records import (
    OPEN_JOB,
    AssignmentStatus,
    Attempt,
    CarRecord,
    JobReport,
    OpenJob,
    Outcome,
    Slot,
    SlotStatus,
    Statement,
)
from protocol.job_messages import JobStatus, JobSubmission, ShardPreempted, ShardResult
from protocol.owners import RobotaxiTrip
from protocol.vehicle_messages import OwnerMode

MAX_KEPT_BATCHES = 25  # ticks' bulk writes kept while the writer is busy (about 5 s): then handing waits for it


class Ledger:
    """The durable record of jobs and money; one SQLite file, written in short transactions."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._db = open_ledger_file(path)  # the loop's connection: reads of tables the writer never touches
        self._writer = None if self.path == ":memory:" else Writer(path)  # ":memory:" has no second connection
        self._batch: list[Callable[[sqlite3.Connection], None]] | None = None  # the writes of a `bulk` block
        self._kept: list[Callable[[sqlite3.Connection], None]] = []  # bulk blocks kept while the writer was busy
        self._kept_blocks = 0
        self._submissions: dict[str, JobSubmission] = {}  # open jobs' submissions, parsed once (they never change)

    @property
    def db(self) -> sqlite3.Connection:
        """The loop's connection, once the bulk writes made so far are written."""
        if self._writer is not None:
            self._hand_kept()
            self._writer.wait()
        return self._db

    def reader(self) -> sqlite3.Connection | None:
        """A read-only connection of its own (for a report built in another thread), None for ":memory:"."""
        if self._writer is None:
            return None
        self._writer.wait(raise_error=False)  # every write handed before the report was asked for (errors: the loop's)
        return sqlite3.connect(f"file:{Path(self.path).resolve()}?mode=ro", uri=True, check_same_thread=False)

    def close(self) -> None:
        """Write what was handed to the writer (and kept for it), then close both connections."""
        try:
            if self._writer is not None:
                self._hand_kept()
                self._writer.close()
        finally:
            self._db.close()

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """The bulk writes made inside are handed to the writer together, as one transaction, at the end."""
        if self._batch is not None:  # already in a bulk block: its end hands them
            yield
            return
        batch: list[Callable[[sqlite3.Connection], None]] = []
        self._batch = batch
        try:
            yield
        finally:
            self._batch = None
        if not batch:
            return
        if self._writer is not None and self._writer.busy() and self._kept_blocks < MAX_KEPT_BATCHES:
            self._kept += batch  # written with the next block, in the same transaction
            self._kept_blocks += 1
            return
        work, self._kept, self._kept_blocks = self._kept + batch, [], 0
        self._write(lambda db: _run_all(work, db))

    def _hand_kept(self) -> None:
        """Hand the bulk blocks kept for the writer (before anything that must come after them)."""
        if self._kept and self._writer is not None:
            work, self._kept, self._kept_blocks = self._kept, [], 0
            self._writer.hand(lambda db: _run_all(work, db))

    def _write(self, work: Callable[[sqlite3.Connection], None]) -> None:
        """A bulk write: into the current `bulk` block, else to the writer, else (":memory:") here and now."""
        if self._batch is not None:
            self._batch.append(work)
        elif self._writer is not None:
            self._hand_kept()  # in the order they were made
            self._writer.hand(work)
        else:
            with self.transaction() as db:
                work(db)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic change: all of it survives a kill -9, or none of it."""
        db = self.db  # after the writer's batches: one writer at a time, and in the order they were made
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # job events ----------------------------------------------------------------------------
    def add_job(self, job: JobSubmission, deadline_s: float | None) -> bool:
        """Queue a job with its shards and replica slots; False if a job has the id already."""
        self._submissions.pop(job.job_id, None)
        with self.transaction() as db:
            return job_events.add_job(db, job, deadline_s)

    def reject_job(self, job_id: str, name: str, reason: str) -> bool:
        """Keep a rejected submission, so its state survives a restart; False if a real job has the id."""
        with self.transaction() as db:
            return job_events.reject_job(db, job_id, name, reason)

    def start_attempt(self, assignment_id: str, slot: Slot, car: tuple[str, str], tops: float, price: float,
                      now_s: float) -> None:
        """Record that `car` (vehicle id, owner id) runs `slot` at `tops` and `price` from `now_s` on."""
        with self.transaction() as db:
            job_events.start_attempt(db, assignment_id, slot, car, tops, price, now_s)

    def end_job(self, job_id: str, status: JobStatus, reason: str) -> list[Attempt]:
        """Cancel or fail an open job; returns its active attempts, now cancelled, for their cars to be told."""
        with self.transaction() as db:
            return job_events.end_job(db, job_id, status, reason)

    # shard events --------------------------------------------------------------------------
    def record_progress(self, assignment_id: str, done: float, checkpoint_at: float, checkpoint: str,
                        at: Moment) -> bool:
        """Keep an active assignment's progress and checkpoint, as far as its rate allows; True if applied."""
        with self.transaction() as db:
            return shard_events.record_progress(db, assignment_id, done, checkpoint_at, checkpoint, at)

    def record_preemption(self, message: ShardPreempted, energy_price: float, at: Moment) -> Attempt | None:
        """Pay the work a car handed back and reopen its slot from the checkpoint; None if not active."""
        with self.transaction() as db:
            return shard_events.record_preemption(db, message, energy_price, at)

    def record_loss(self, assignment_id: str, status: AssignmentStatus, *, preemption: bool,
                    last_heard_s: float | None = None) -> Attempt | None:
        """End an assignment that will bring no result and reopen its slot; None if it was not active."""
        with self.transaction() as db:
            return shard_events.record_loss(db, assignment_id, status, preemption=preemption,
                                            last_heard_s=last_heard_s)

    def record_result(self, message: ShardResult, energy_price: float, at: Moment, *, spot_check: bool) -> Outcome:
        """Refuse an impossible or wrong result, else count its vote and settle its shard."""
        with self.transaction() as db:
            return result_events.record_result(db, message, energy_price, at, spot_check=spot_check)

    # jobs ----------------------------------------------------------------------------------
    def job_ids(self) -> list[str]:
        """Every job the ledger holds, rejected ones included."""
        return [str(job_id) for (job_id,) in self._db.execute("SELECT job_id FROM jobs ORDER BY seq")]

    def has_job(self, job_id: str) -> bool:
        """Whether a job (not a rejected submission) has this id."""
        found = self._db.execute("SELECT 1 FROM jobs WHERE job_id = ? AND status != ?", (job_id, JobStatus.REJECTED))
        return found.fetchone() is not None

    def submission(self, job_id: str) -> JobSubmission | None:
        """The submission of a job, None if there is none or it was rejected."""
        row = self._db.execute("SELECT submission, status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None or row[1] == JobStatus.REJECTED:
            return None
        return JobSubmission.model_validate_json(str(row[0]))

    def open_jobs(self) -> list[OpenJob]:
        """Queued and running jobs in the order cars rank them: priority, then price cap, then age.

        Each submission is parsed once, when its job is first seen open, and forgotten when the
        job is no longer open or its id is taken by a new submission.
        """
        found = self._db.execute("SELECT job_id, status, deadline_s FROM jobs WHERE status IN (?, ?)"
                                " ORDER BY priority DESC, seq", OPEN_JOB).fetchall()
        known, parsed = self._submissions, {}
        for job_id, _, _ in found:
            submission = known.get(job_id)
            if submission is None:
                row = self._db.execute("SELECT submission FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                submission = JobSubmission.model_validate_json(str(row[0]))
            parsed[str(job_id)] = submission
        self._submissions = parsed
        jobs = [OpenJob(str(job_id), parsed[job_id], JobStatus(status), deadline_s)
                for job_id, status, deadline_s in found]
        jobs.sort(key=lambda job: (-job.submission.priority, -(job.submission.price_cap_per_tops_hour or 1e18)))
        return jobs

    def waiting_slots(self, job_id: str, limit: int) -> list[Slot]:
        """Up to `limit` of a job's slots that wait for a car, oldest first."""
        found = self._db.execute(
            "SELECT sl.slot_id, sl.job_id, sl.shard_id, sl.resume_from, sl.checkpoint, sh.work, sh.input_digest"
            " FROM slots sl JOIN shards sh USING(job_id, shard_id)"
            " WHERE sl.job_id = ? AND sl.status = ? ORDER BY sl.slot_id LIMIT ?",
            (job_id, SlotStatus.WAITING, limit),
        )
        return [Slot(*row) for row in found]

    def running_slot_count(self, job_id: str) -> int:
        """How many of a job's slots run on a car now."""
        found = self._db.execute("SELECT COUNT(*) FROM slots WHERE job_id = ? AND status = ?",
                                (job_id, SlotStatus.RUNNING))
        return int(found.fetchone()[0])

    def shard_cars(self, job_id: str, shard_id: str) -> set[str]:
        """Cars that ran (or run) this shard, or had a result for it refused: a replica goes elsewhere."""
        found = self._db.execute(
            "SELECT vehicle_id FROM assignments WHERE job_id = ? AND shard_id = ? AND status IN (?, ?, ?)",
            (job_id, shard_id, AssignmentStatus.ACTIVE, AssignmentStatus.DONE, AssignmentStatus.REJECTED),
        )
        return {str(vehicle_id) for (vehicle_id,) in found}

    def job_report(self, job_id: str) -> JobReport | None:
        """Where a job stands (shards, work, money), None if the ledger has no such job."""
        return job_report(self._db, job_id)

    def jobs_by_status(self) -> dict[JobStatus, int]:
        return {JobStatus(s): int(n) for s, n in self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")}

    # assignments ---------------------------------------------------------------------------
    def assignment_count(self) -> int:
        """How many assignments were ever made: new ids count on from it."""
        return int(self._db.execute("SELECT COUNT(*) FROM assignments").fetchone()[0])

    def attempt(self, assignment_id: str) -> Attempt | None:
        return rows.attempt(self._db, assignment_id)

    def active_attempts(self) -> list[Attempt]:
        return rows.active_attempts(self._db)

    # cars and money ------------------------------------------------------------------------
    def totals(self) -> dict[str, float]:
        return {str(n): float(v) for n, v in self._db.execute("SELECT name, value FROM totals")}

    def statement(self, vehicle_id: str) -> Statement:
        row = self.db.execute("SELECT tera_ops, gross, energy_kwh, energy_cost FROM cars WHERE vehicle_id = ?",
                              (vehicle_id,)).fetchone()
        values = [float(v) for v in row] if row else [0.0] * 4
        return Statement(vehicle_id, values[0] / 3600.0, values[1], values[2], values[3])

    def owner_statements(self) -> list[Statement]:
        found = self.db.execute(
            "SELECT owner_id, SUM(tera_ops), SUM(gross), SUM(energy_kwh), SUM(energy_cost)"
            " FROM cars GROUP BY owner_id ORDER BY SUM(gross) DESC"
        )
        return [Statement(str(o), float(t) / 3600.0, float(g), float(e), float(c)) for o, t, g, e, c in found]

    def set_owner_modes(self, changes: list[tuple[str, str, OwnerMode]], now_s: float) -> None:
        """Record each (car, owner, owner mode) from `now_s` on; see `earnings.set_modes`."""
        self._write(lambda db: earnings.set_modes(db, changes, now_s))

    def record_trip(self, vehicle_id: str, owner_id: str, trip: RobotaxiTrip, energy_price: float,
                    at: Moment, ends_at_s: float) -> float | None:
        """Book a robotaxi trip ending at `ends_at_s` once; its income, None if refused (counted) or a duplicate."""
        with self.transaction() as db:
            return earnings.record_trip(db, vehicle_id, owner_id, trip, energy_price, at, ends_at_s)

    def car_record(self, vehicle_id: str) -> CarRecord:
        """(valid results, wrong results, reliability) of a car."""
        return rows.car_record(self.db, vehicle_id)

    def unreliable_cars(self, below: float) -> set[str]:
        found = self.db.execute("SELECT vehicle_id FROM cars WHERE reliability < ?", (below,))
        return {str(vehicle_id) for (vehicle_id,) in found}

    # refusals, clock, offers ---------------------------------------------------------------
    def rejections(self) -> dict[str, int]:
        """Messages and claims refused, by reason, since the ledger began."""
        return {str(r): int(n) for r, n in self.db.execute("SELECT reason, count FROM rejections")}

    def add_rejections(self, counts: dict[str, int]) -> None:
        """Count refusals the engine decided outside a ledger event (written once per tick)."""
        self._write(lambda db: _count_rejections(db, counts))

    def last_clock(self) -> tuple[float, float] | None:
        """(simulation seconds, Unix seconds) when the dispatcher last recorded its clock."""
        row = self.db.execute("SELECT sim_s, unix_s FROM clock WHERE id = 1").fetchone()
        return (float(row[0]), float(row[1])) if row else None

    def save_clock(self, sim_s: float, unix_s: float) -> None:
        """Record the clock, for a restart to continue it."""
        self._write(lambda db: _save_clock(db, sim_s, unix_s))

    def save_offers(self, standing: list[tuple[object, ...]], gone: list[str]) -> None:
        """Keep cars' standing offers (rows of `offer_book`) and forget withdrawn ones, so that a restarted
        dispatcher knows them.

        Offers are soft state: they are written in batches, and the last batch before a kill -9
        may be lost; the cars' next offers, refusals and departures correct that.
        """
        self._write(lambda db: offer_book.save_offers(db, standing, gone))

    def standing_offers(self) -> list[tuple[object, ...]]:
        """The rows kept by `save_offers`."""
        return self.db.execute("SELECT * FROM offer_book").fetchall()

    def take_legacy_offers(self) -> list[str]:
        """Offers an older version kept as JSON, emptied as they are read (the caller saves them anew)."""
        with self.transaction() as db:
            found = [str(offer) for (offer,) in db.execute("SELECT offer FROM offers")]
            db.execute("DELETE FROM offers")
        return found


def _run_all(batch: list[Callable[[sqlite3.Connection], None]], db: sqlite3.Connection) -> None:
    for work in batch:
        work(db)


def _count_rejections(db: sqlite3.Connection, counts: dict[str, int]) -> None:
    for reason, n in counts.items():
        count_rejection(db, reason, n)


def _save_clock(db: sqlite3.Connection, sim_s: float, unix_s: float) -> None:
    db.execute("INSERT OR REPLACE INTO clock VALUES (1, ?, ?)", (sim_s, unix_s))
