"""The ledger's tables, and opening a SQLite file (WAL) with them, older ledgers brought up to date.

Status columns hold the values of the enums in `dispatcher.records`; `assignments.paid` holds a
`Payment`. `trips` keeps each robotaxi trip booked (once), `mode_money` what each car earned and
spent in each owner mode and how long it spent in it (`cars.mode_since_s` opens the current
stretch). `offer_book` keeps each car's standing offer as the book holds it (its times on the
ledger's clock, which a restart continues), so that a restarted dispatcher knows the offers that
still stand; `offers` is where older versions kept them as JSON, read once and emptied on start.
The per-car tables stay rowid tables: their rows are appended and only the key index is written
at random places (WITHOUT ROWID measured 1.4-1.5x slower for a million cars in random order).
A new ledger has the owner's columns of `cars` from the start; an older one gets them on open.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
  wrong INTEGER NOT NULL DEFAULT 0, reliability REAL NOT NULL DEFAULT 1.0,
  owner_mode TEXT NOT NULL DEFAULT 'compute', mode_since_s REAL, robotaxi_gross REAL NOT NULL DEFAULT 0,
  robotaxi_km REAL NOT NULL DEFAULT 0, robotaxi_trips INTEGER NOT NULL DEFAULT 0, trip_until_s REAL);
CREATE TABLE IF NOT EXISTS totals(name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS offers(vehicle_id TEXT PRIMARY KEY, offer TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offer_book(
  vehicle_id TEXT PRIMARY KEY, offer_id TEXT NOT NULL, hardware TEXT NOT NULL, free_tops REAL NOT NULL,
  price REAL NOT NULL, offered_at_s REAL NOT NULL, departure_at_s REAL NOT NULL, confidence REAL NOT NULL,
  energy_budget_kwh REAL NOT NULL, soc REAL NOT NULL, min_price REAL NOT NULL, max_shard_hours REAL,
  pack_temp_c REAL, local_offered_s REAL);
CREATE TABLE IF NOT EXISTS rejections(reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS trips(
  vehicle_id TEXT NOT NULL, trip_id TEXT NOT NULL, fare REAL NOT NULL, owner_income REAL NOT NULL,
  paid_km REAL NOT NULL, empty_km REAL NOT NULL, duration_s REAL NOT NULL, energy_kwh REAL NOT NULL,
  at_s REAL NOT NULL, PRIMARY KEY(vehicle_id, trip_id));
CREATE TABLE IF NOT EXISTS mode_money(
  vehicle_id TEXT NOT NULL, owner_mode TEXT NOT NULL, seconds REAL NOT NULL DEFAULT 0,
  tera_ops REAL NOT NULL DEFAULT 0, compute_gross REAL NOT NULL DEFAULT 0,
  robotaxi_gross REAL NOT NULL DEFAULT 0, energy_cost REAL NOT NULL DEFAULT 0,
  robotaxi_trips INTEGER NOT NULL DEFAULT 0, robotaxi_km REAL NOT NULL DEFAULT 0,
  PRIMARY KEY(vehicle_id, owner_mode));
CREATE TABLE IF NOT EXISTS clock(id INTEGER PRIMARY KEY CHECK (id = 1), sim_s REAL NOT NULL, unix_s REAL NOT NULL);
"""
ADDED_COLUMNS = (  # columns a ledger written by an older version lacks: added on open
    ("shards", "paid_work REAL NOT NULL DEFAULT 0"),
    ("assignments", "assigned_at REAL NOT NULL DEFAULT 0"),
    ("assignments", "heard_at REAL NOT NULL DEFAULT 0"),
    # the owner's money: the car's mode (and since when, NULL until its telemetry said), robotaxi income
    ("cars", "owner_mode TEXT NOT NULL DEFAULT 'compute'"),
    ("cars", "mode_since_s REAL"),
    ("cars", "robotaxi_gross REAL NOT NULL DEFAULT 0"),
    ("cars", "robotaxi_km REAL NOT NULL DEFAULT 0"),
    ("cars", "robotaxi_trips INTEGER NOT NULL DEFAULT 0"),
    ("cars", "trip_until_s REAL"),  # when the car's last booked trip ended, on the ledger's clock
)
CACHE_KIB = 128 * 1024  # page cache: a million cars' rows are written at random places of their tables
TOTALS = (
    "shards_completed", "work_done", "preemptions", "redone", "wrong_results",
    "earnings_gross", "energy_kwh", "energy_cost", "robotaxi_gross", "robotaxi_trips", "robotaxi_km",
    "trip_duplicates",  # a trip delivered again (QoS 1): not booked twice, not a refusal
)


def open_ledger_file(path: Path | str) -> sqlite3.Connection:
    """A connection to the ledger at `path` (":memory:" for none), its tables created or brought up to date."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    db.executescript(SCHEMA)
    for table, column in ADDED_COLUMNS:
        present = {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}
        if column.split()[0] not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    db.executemany("INSERT OR IGNORE INTO totals VALUES (?, 0)", [(name,) for name in TOTALS])
    return db
