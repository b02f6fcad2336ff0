"""The ledger's accounts, changed inside an event's transaction: pay, energy, totals, refusals, car records."""

from __future__ import annotations

import sqlite3

from dispatcher import jobs


def count_rejection(db: sqlite3.Connection, reason: str, n: int = 1) -> None:
    """Count a refused message or claim under `reason`."""
    db.execute("INSERT INTO rejections VALUES (?, ?) ON CONFLICT(reason) DO UPDATE SET count = count + ?",
               (reason, n, n))


def add_total(db: sqlite3.Connection, name: str, amount: float) -> None:
    db.execute("UPDATE totals SET value = value + ? WHERE name = ?", (amount, name))


def ensure_car(db: sqlite3.Connection, vehicle_id: str, owner_id: str) -> None:
    db.execute("INSERT OR IGNORE INTO cars(vehicle_id, owner_id) VALUES (?, ?)", (vehicle_id, owner_id))


def add_to_mode(db: sqlite3.Connection, vehicle_id: str, **amounts: float) -> None:
    """Add money (columns of `mode_money`) to what the car earned in the owner mode it is in now."""
    columns = ", ".join(amounts)
    db.execute(
        f"INSERT INTO mode_money(vehicle_id, owner_mode, {columns}) SELECT vehicle_id, owner_mode,"
        f" {', '.join('?' for _ in amounts)} FROM cars WHERE vehicle_id = ? ON CONFLICT(vehicle_id, owner_mode)"
        f" DO UPDATE SET {', '.join(f'{c} = {c} + excluded.{c}' for c in amounts)}",
        (*amounts.values(), vehicle_id),
    )


def charge_energy(db: sqlite3.Connection, vehicle_id: str, energy_kwh: float, price_per_kwh: float) -> None:
    """A car used energy on our work: it counts against its net earnings."""
    cost = energy_kwh * price_per_kwh
    db.execute(
        "UPDATE cars SET energy_kwh = energy_kwh + ?, energy_cost = energy_cost + ? WHERE vehicle_id = ?",
        (energy_kwh, cost, vehicle_id),
    )
    add_total(db, "energy_kwh", energy_kwh)
    add_total(db, "energy_cost", cost)
    add_to_mode(db, vehicle_id, energy_cost=cost)


def pay(db: sqlite3.Connection, job_id: str, vehicle_id: str, tera_ops: float, price: float) -> None:
    """Pay a car for `tera_ops` of work at `price` per TOPS-hour, and bill the job."""
    gross = tera_ops / 3600.0 * price
    db.execute(
        "UPDATE cars SET tera_ops = tera_ops + ?, gross = gross + ? WHERE vehicle_id = ?",
        (tera_ops, gross, vehicle_id),
    )
    db.execute("UPDATE jobs SET cost = cost + ? WHERE job_id = ?", (gross, job_id))
    add_to_mode(db, vehicle_id, tera_ops=tera_ops, compute_gross=gross)
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


def count_preemption(db: sqlite3.Connection, job_id: str, redone: float) -> None:
    """A shard changed cars before its end; `redone` tera-ops past its checkpoint will be done again."""
    db.execute("UPDATE jobs SET preemptions = preemptions + 1, redone = redone + ? WHERE job_id = ?", (redone, job_id))
    add_total(db, "preemptions", 1)
    add_total(db, "redone", redone)


def count_wrong_result(db: sqlite3.Connection, job_id: str) -> None:
    db.execute("UPDATE jobs SET wrong_results = wrong_results + 1 WHERE job_id = ?", (job_id,))
    add_total(db, "wrong_results", 1)


def judge_car(db: sqlite3.Connection, vehicle_id: str, *, valid: bool) -> None:
    """One more judged result for a car: its valid or wrong count, and its reliability."""
    score = db.execute("SELECT reliability FROM cars WHERE vehicle_id = ?", (vehicle_id,)).fetchone()[0]
    db.execute(
        "UPDATE cars SET valid = valid + ?, wrong = wrong + ?, reliability = ? WHERE vehicle_id = ?",
        (int(valid), int(not valid), jobs.reliability_after(float(score), valid), vehicle_id),
    )
