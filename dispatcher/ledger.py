"""The job ledger in SQLite (WAL): jobs, shards, replica slots, assignments, cars and totals.

Every incoming event is applied in one transaction, and only if the assignment it names is
still active, so a duplicate QoS 1 delivery, or a message replayed after a kill -9 and restart,
changes nothing the second time. A replica *slot* is one line of execution of a shard; an
assignment is one attempt of a slot on one car. A preempted attempt puts its slot back to
waiting with the checkpoint it handed back. Times (`assigned_at`, `heard_at`) are the
dispatcher's simulation seconds, and rejected claims are counted by reason in `rejections`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs(
  job_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, submission TEXT NOT NULL, status TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '', deadline_s REAL, priority INTEGER NOT NULL DEFAULT 0,
  cost REAL NOT NULL DEFAULT 0, preemptions INTEGER NOT NULL DEFAULT 0,
  redone REAL NOT NULL DEFAULT 0, wrong_results INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS shards(
  job_id TEXT NOT NULL, shard_id TEXT NOT NULL, work REAL NOT NULL, input_digest TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'open', accepted_digest TEXT, paid_work REAL NOT NULL DEFAULT 0,
  PRIMARY KEY(job_id, shard_id));
CREATE TABLE IF NOT EXISTS slots(
  slot_id INTEGER PRIMARY KEY, job_id TEXT NOT NULL, shard_id TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'waiting', resume_from REAL NOT NULL DEFAULT 0,
  checkpoint TEXT NOT NULL DEFAULT '', vehicle_id TEXT, result_digest TEXT);
CREATE INDEX IF NOT EXISTS slots_by_job ON slots(job_id, status);
CREATE TABLE IF NOT EXISTS assignments(
  assignment_id TEXT PRIMARY KEY, slot_id INTEGER NOT NULL, job_id TEXT NOT NULL,
  shard_id TEXT NOT NULL, vehicle_id TEXT NOT NULL, allocated_tops REAL NOT NULL,
  price REAL NOT NULL, resume_from REAL NOT NULL, status TEXT NOT NULL DEFAULT 'active',
  done_tera_ops REAL NOT NULL DEFAULT 0, checkpoint_tera_ops REAL NOT NULL DEFAULT 0,
  checkpoint TEXT NOT NULL DEFAULT '', work_tera_ops REAL NOT NULL DEFAULT 0,
  energy_kwh REAL NOT NULL DEFAULT 0, result_digest TEXT, paid INTEGER NOT NULL DEFAULT 0,
  assigned_at REAL NOT NULL DEFAULT 0, heard_at REAL NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS assignments_by_status ON assignments(status);
CREATE INDEX IF NOT EXISTS assignments_by_shard ON assignments(job_id, shard_id);
CREATE TABLE IF NOT EXISTS cars(
  vehicle_id TEXT PRIMARY KEY, owner_id TEXT NOT NULL, tera_ops REAL NOT NULL DEFAULT 0,
  gross REAL NOT NULL DEFAULT 0, energy_kwh REAL NOT NULL DEFAULT 0,
  energy_cost REAL NOT NULL DEFAULT 0, valid INTEGER NOT NULL DEFAULT 0,
  wrong INTEGER NOT NULL DEFAULT 0, reliability REAL NOT NULL DEFAULT 1.0);
CREATE TABLE IF NOT EXISTS totals(name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS offers(vehicle_id TEXT PRIMARY KEY, offer TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejections(reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS clock(id INTEGER PRIMARY KEY CHECK (id = 1), sim_s REAL NOT NULL, unix_s REAL NOT NULL);
"""
ADDED_COLUMNS = (  # columns a ledger written by an older version lacks: added on open
    ("shards", "paid_work REAL NOT NULL DEFAULT 0"),
    ("assignments", "assigned_at REAL NOT NULL DEFAULT 0"),
    ("assignments", "heard_at REAL NOT NULL DEFAULT 0"),
)
ATTEMPT_COLUMNS = (
    "a.assignment_id, a.slot_id, a.job_id, a.shard_id, a.vehicle_id, a.allocated_tops, a.price, a.resume_from,"
    " a.status, a.done_tera_ops, a.checkpoint_tera_ops, a.checkpoint, a.assigned_at, a.heard_at, s.work"
    " FROM assignments a JOIN shards s USING(job_id, shard_id)"
)
TOTALS = (
    "shards_completed", "work_done", "preemptions", "redone", "wrong_results",
    "earnings_gross", "energy_kwh", "energy_cost",
)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One assignment row, as the engine needs it."""

    assignment_id: str
    slot_id: int
    job_id: str
    shard_id: str
    vehicle_id: str
    allocated_tops: float
    price: float
    resume_from: float
    status: str
    done_tera_ops: float
    checkpoint_tera_ops: float
    checkpoint: str
    assigned_at: float  # the dispatcher's simulation seconds
    heard_at: float  # when the car last spoke of this assignment
    shard_work: float  # the whole shard's tera-ops


@dataclass(frozen=True, slots=True)
class Statement:
    """Earnings of one car or one owner."""

    who: str
    tops_hours: float
    gross: float
    energy_kwh: float
    energy_cost: float

    @property
    def net(self) -> float:
        return self.gross - self.energy_cost


class Ledger:
    """The durable record of jobs and money; one SQLite file, written in short transactions."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._add_missing_columns()
        self.db.executemany("INSERT OR IGNORE INTO totals VALUES (?, 0)", [(n,) for n in TOTALS])

    def close(self) -> None:
        self.db.close()

    def _add_missing_columns(self) -> None:
        for table, column in ADDED_COLUMNS:
            present = {str(row[1]) for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column.split()[0] not in present:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic change: all of it survives a kill -9, or none of it."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # reads ---------------------------------------------------------------------------------
    def one(self, sql: str, *params: object) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.db.execute(sql, params).fetchone()
        return row

    def scalar(self, sql: str, *params: object) -> float:
        row = self.one(sql, *params)
        value = row[0] if row else None
        return float(value) if isinstance(value, int | float) else 0.0

    def totals(self) -> dict[str, float]:
        return {str(n): float(v) for n, v in self.db.execute("SELECT name, value FROM totals")}

    def attempt(self, assignment_id: str) -> Attempt | None:
        row = self.one(f"SELECT {ATTEMPT_COLUMNS} WHERE a.assignment_id = ?", assignment_id)
        return Attempt(*row) if row else None

    def active_attempts(self) -> list[Attempt]:
        rows = self.db.execute(f"SELECT {ATTEMPT_COLUMNS} WHERE a.status = 'active'")
        return [Attempt(*row) for row in rows]

    def rejections(self) -> dict[str, int]:
        """Messages and claims refused, by reason, since the ledger began."""
        return {str(r): int(n) for r, n in self.db.execute("SELECT reason, count FROM rejections")}

    def add_rejections(self, counts: dict[str, int]) -> None:
        """Count refusals the engine decided outside a ledger event (written once per tick)."""
        with self.transaction() as db:
            for reason, n in counts.items():
                count_rejection(db, reason, n)

    def last_clock(self) -> tuple[float, float] | None:
        """(simulation seconds, Unix seconds) when the dispatcher last recorded its clock."""
        row = self.one("SELECT sim_s, unix_s FROM clock WHERE id = 1")
        return (float(row[0]), float(row[1])) if row else None

    def save_clock(self, sim_s: float, unix_s: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO clock VALUES (1, ?, ?)", (sim_s, unix_s))

    def statement(self, vehicle_id: str) -> Statement:
        row = self.one("SELECT tera_ops, gross, energy_kwh, energy_cost FROM cars WHERE vehicle_id = ?", vehicle_id)
        values = [float(v) for v in row] if row else [0.0] * 4
        return Statement(vehicle_id, values[0] / 3600.0, values[1], values[2], values[3])

    def owner_statements(self) -> list[Statement]:
        rows = self.db.execute(
            "SELECT owner_id, SUM(tera_ops), SUM(gross), SUM(energy_kwh), SUM(energy_cost)"
            " FROM cars GROUP BY owner_id ORDER BY SUM(gross) DESC"
        )
        return [Statement(str(o), float(t) / 3600.0, float(g), float(e), float(c)) for o, t, g, e, c in rows]

    def car_record(self, vehicle_id: str) -> tuple[int, int, float]:
        """(valid results, wrong results, reliability) of a car."""
        row = self.one("SELECT valid, wrong, reliability FROM cars WHERE vehicle_id = ?", vehicle_id)
        if row is None:
            return 0, 0, 1.0
        valid, wrong, reliability = row
        return int(valid), int(wrong), float(reliability)

    def save_offers(self, changes: dict[str, str | None]) -> None:
        """Keep cars' standing offers (None: withdrawn), so that a restarted dispatcher knows them.

        Offers are soft state: they are written in batches, and the last batch before a kill -9
        may be lost; the cars' next offers, refusals and departures correct that.
        """
        with self.transaction() as db:
            db.executemany("DELETE FROM offers WHERE vehicle_id = ?", [(v,) for v, o in changes.items() if o is None])
            db.executemany("INSERT OR REPLACE INTO offers VALUES (?, ?)",
                           [(v, o) for v, o in changes.items() if o is not None])

    def standing_offers(self) -> list[str]:
        return [str(row[0]) for row in self.db.execute("SELECT offer FROM offers")]

    def unreliable_cars(self, below: float) -> set[str]:
        return {str(r[0]) for r in self.db.execute("SELECT vehicle_id FROM cars WHERE reliability < ?", (below,))}


def count_rejection(db: sqlite3.Connection, reason: str, n: int = 1) -> None:
    """Count a refused message or claim under `reason`."""
    db.execute("INSERT INTO rejections VALUES (?, ?) ON CONFLICT(reason) DO UPDATE SET count = count + ?",
               (reason, n, n))


def add_total(db: sqlite3.Connection, name: str, amount: float) -> None:
    db.execute("UPDATE totals SET value = value + ? WHERE name = ?", (amount, name))


def ensure_car(db: sqlite3.Connection, vehicle_id: str, owner_id: str) -> None:
    db.execute("INSERT OR IGNORE INTO cars(vehicle_id, owner_id) VALUES (?, ?)", (vehicle_id, owner_id))


def charge_energy(db: sqlite3.Connection, vehicle_id: str, energy_kwh: float, price_per_kwh: float) -> None:
    """A car used energy on our work: it counts against its net earnings."""
    cost = energy_kwh * price_per_kwh
    db.execute(
        "UPDATE cars SET energy_kwh = energy_kwh + ?, energy_cost = energy_cost + ? WHERE vehicle_id = ?",
        (energy_kwh, cost, vehicle_id),
    )
    add_total(db, "energy_kwh", energy_kwh)
    add_total(db, "energy_cost", cost)


def pay(db: sqlite3.Connection, job_id: str, vehicle_id: str, tera_ops: float, price: float) -> None:
    """Pay a car for `tera_ops` of work at `price` per TOPS-hour, and bill the job."""
    gross = tera_ops / 3600.0 * price
    db.execute(
        "UPDATE cars SET tera_ops = tera_ops + ?, gross = gross + ? WHERE vehicle_id = ?",
        (tera_ops, gross, vehicle_id),
    )
    db.execute("UPDATE jobs SET cost = cost + ? WHERE job_id = ?", (gross, job_id))
    add_total(db, "earnings_gross", gross)
    add_total(db, "work_done", tera_ops)


def pay_for_shard(
    db: sqlite3.Connection, job_id: str, shard_id: str, vehicle_id: str, tera_ops: float, price: float
) -> float:
    """Pay for work on one shard, never beyond its work x its replica slots in all; returns what was paid."""
    work, paid, slots = db.execute(
        "SELECT work, paid_work, (SELECT COUNT(*) FROM slots sl WHERE sl.job_id = s.job_id"
        " AND sl.shard_id = s.shard_id) FROM shards s WHERE job_id = ? AND shard_id = ?", (job_id, shard_id)).fetchone()
    amount = max(0.0, min(tera_ops, float(work) * int(slots) - float(paid)))
    if amount < tera_ops * (1 - 1e-9):
        count_rejection(db, "shard_pay_cap")
    db.execute("UPDATE shards SET paid_work = paid_work + ? WHERE job_id = ? AND shard_id = ?",
               (amount, job_id, shard_id))
    pay(db, job_id, vehicle_id, amount, price)
    return amount
