"""The owner's money in the ledger: robotaxi trips booked, owner modes kept, and earnings read per car,
owner, mode and for the fleet.

Robotaxi income is the owner's share of the fare that `protocol.owners.fare_for` gives for the
trip the car reported; its driving energy is charged like compute energy, so that net is always
gross (compute + robotaxi) minus energy cost, from the same rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from dispatcher.credit import Moment
from dispatcher.ledger.accounts import add_to_mode, add_total, charge_energy, count_rejection, ensure_car
from protocol.owners import (
    CAR_PAYMENT,
    DAYS_PER_MONTH,
    MAX_TRIP_KMH,
    MAX_TRIP_PAID_KM,
    ROBOTAXI_MODES,
    CarMoney,
    ModeMoney,
    Money,
    OwnerMoney,
    RobotaxiTrip,
    fare_for,
    owner_income_for,
)
from protocol.vehicle_messages import OwnerMode

MONEY_COLUMNS = ("SUM(tera_ops), SUM(gross), SUM(robotaxi_gross), SUM(energy_cost), SUM(robotaxi_trips),"
                 " SUM(robotaxi_km)")
DAY_S = 86400.0


def money(tera_ops: float | None, compute: float | None, robotaxi: float | None, energy: float | None,
          trips: float | None, km: float | None) -> Money:
    """A `Money` from the ledger's columns (SUMs over no rows are NULL: zero)."""
    compute_gross, robotaxi_gross, energy_cost = float(compute or 0), float(robotaxi or 0), float(energy or 0)
    return Money(compute_gross=compute_gross, robotaxi_gross=robotaxi_gross, energy_cost=energy_cost,
                 net=compute_gross + robotaxi_gross - energy_cost, compute_tops_hours=float(tera_ops or 0) / 3600.0,
                 robotaxi_trips=int(trips or 0), robotaxi_km=float(km or 0))


# changes ---------------------------------------------------------------------------------------
def set_modes(db: sqlite3.Connection, changes: Iterable[tuple[str, str, OwnerMode]], now_s: float) -> None:
    """Record each (car, owner, mode) from `now_s` on, closing the time spent in the car's previous mode.

    A car first booked as its own owner takes the owner its status named since. Cars new to the
    ledger are inserted with their mode; if every car of the batch was new (a fleet joining), that
    is all. Otherwise set-based (a temporary table joined once per statement), so that a million
    cars' modes are one short transaction, not three statements per car."""
    rows = list({row[0]: row for row in changes}.values())  # a car's last change counts
    before = db.total_changes
    db.executemany(  # a car new to the ledger starts in its mode now: one write (an OwnerMode is bound as its value)
        "INSERT INTO cars(vehicle_id, owner_id, owner_mode, mode_since_s) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(vehicle_id) DO NOTHING", [(vid, owner, mode, now_s) for vid, owner, mode in rows])
    if db.total_changes - before == len(rows):  # every car was new (a fleet joining): nothing else to change
        return
    db.execute("CREATE TEMP TABLE IF NOT EXISTS mode_changes(vehicle_id TEXT PRIMARY KEY, owner_id TEXT NOT NULL,"
               " owner_mode TEXT NOT NULL)")
    db.execute("DELETE FROM mode_changes")
    db.executemany("INSERT INTO mode_changes VALUES (?, ?, ?)", rows)
    db.execute(  # an owner heard after the car's first payment
        "UPDATE cars SET owner_id = (SELECT owner_id FROM mode_changes m WHERE m.vehicle_id = cars.vehicle_id)"
        " WHERE vehicle_id IN (SELECT vehicle_id FROM mode_changes WHERE owner_id != vehicle_id)"
        " AND owner_id = vehicle_id")
    db.execute(  # the time spent in the mode each changing car leaves
        "INSERT INTO mode_money(vehicle_id, owner_mode, seconds) SELECT c.vehicle_id, c.owner_mode,"
        " MAX(0.0, ? - c.mode_since_s) FROM mode_changes m CROSS JOIN cars c ON c.vehicle_id = m.vehicle_id"
        " WHERE c.mode_since_s IS NOT NULL AND c.owner_mode != m.owner_mode"
        " ON CONFLICT(vehicle_id, owner_mode) DO UPDATE SET seconds = seconds + excluded.seconds", (now_s,))
    db.execute(
        "UPDATE cars SET owner_mode = (SELECT owner_mode FROM mode_changes m WHERE m.vehicle_id = cars.vehicle_id),"
        " mode_since_s = ? WHERE vehicle_id IN (SELECT vehicle_id FROM mode_changes) AND (mode_since_s IS NULL"
        " OR owner_mode != (SELECT owner_mode FROM mode_changes m WHERE m.vehicle_id = cars.vehicle_id))", (now_s,))
    db.execute("DELETE FROM mode_changes")


def trip_refusal(db: sqlite3.Connection, vehicle_id: str, trip: RobotaxiTrip, ends_at_s: float,
                 at: Moment) -> str | None:
    """Why a reported trip ending at `ends_at_s` (ledger seconds) cannot be booked at `at`, or None.

    A car drives one trip at a time: a trip must start after the car's last booked one ended and
    must have ended by now, both within the slack granted to cars' clocks."""
    if trip.paid_km > MAX_TRIP_PAID_KM:
        return "trip_too_long"
    if (trip.paid_km + trip.empty_km) / trip.duration_s * 3600.0 > MAX_TRIP_KMH:
        return "trip_too_fast"
    row = db.execute("SELECT owner_mode, trip_until_s FROM cars WHERE vehicle_id = ?", (vehicle_id,)).fetchone()
    if row is None or OwnerMode(row[0]) not in ROBOTAXI_MODES:
        return "trip_not_in_robotaxi_mode"
    if ends_at_s > at.now_s + at.slack_s:
        return "trip_in_future"
    if row[1] is not None and ends_at_s - trip.duration_s < float(row[1]) - at.slack_s:
        return "trip_overlaps"
    return None


def _seen_trip(db: sqlite3.Connection, vehicle_id: str, trip: RobotaxiTrip) -> str | None:
    """None for a new trip id; "duplicate" for the same trip delivered again; "trip_id_reused" otherwise."""
    row = db.execute("SELECT paid_km, empty_km, duration_s, energy_kwh FROM trips WHERE vehicle_id = ? AND"
                     " trip_id = ?", (vehicle_id, trip.trip_id)).fetchone()
    if row is None:
        return None
    same = tuple(row) == (trip.paid_km, trip.empty_km, trip.duration_s, trip.energy_kwh)
    return "duplicate" if same else "trip_id_reused"


def record_trip(db: sqlite3.Connection, vehicle_id: str, owner_id: str, trip: RobotaxiTrip,
                energy_price: float, at: Moment, ends_at_s: float) -> float | None:
    """Book a trip once: the owner's share of its fare, its energy; returns the income, None if not booked."""
    ensure_car(db, vehicle_id, owner_id)
    seen = _seen_trip(db, vehicle_id, trip)
    if seen == "duplicate":
        add_total(db, "trip_duplicates", 1.0)  # a QoS 1 redelivery: booked already
        return None
    refusal = seen or trip_refusal(db, vehicle_id, trip, ends_at_s, at)
    if refusal is not None:
        count_rejection(db, refusal)
        return None
    fare, income = fare_for(trip.paid_km, trip.duration_s), owner_income_for(trip.paid_km, trip.duration_s)
    km = trip.paid_km + trip.empty_km
    db.execute("INSERT INTO trips VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (vehicle_id, trip.trip_id, fare, income, trip.paid_km, trip.empty_km, trip.duration_s,
                trip.energy_kwh, at.now_s))
    db.execute("UPDATE cars SET robotaxi_gross = robotaxi_gross + ?, robotaxi_km = robotaxi_km + ?,"
               " robotaxi_trips = robotaxi_trips + 1, trip_until_s = ? WHERE vehicle_id = ?",
               (income, km, ends_at_s, vehicle_id))
    add_to_mode(db, vehicle_id, robotaxi_gross=income, robotaxi_trips=1, robotaxi_km=km)
    for name, amount in (("robotaxi_gross", income), ("robotaxi_trips", 1.0), ("robotaxi_km", km)):
        add_total(db, name, amount)
    charge_energy(db, vehicle_id, trip.energy_kwh, energy_price)
    return income


# reading ---------------------------------------------------------------------------------------
CAR_COLUMNS = ("vehicle_id, owner_id, owner_mode, tera_ops, gross, robotaxi_gross, energy_cost, robotaxi_trips,"
               " robotaxi_km")
NET = "(gross + robotaxi_gross - energy_cost)"


def _car(row: tuple[object, ...]) -> CarMoney:
    vehicle_id, owner_id, mode, *figures = row
    return CarMoney(vehicle_id=str(vehicle_id), owner_id=str(owner_id), owner_mode=OwnerMode(str(mode)),
                    money=money(*figures))  # type: ignore[arg-type]


def car_money(db: sqlite3.Connection, vehicle_id: str) -> CarMoney | None:
    """One car's money, None if the ledger has never heard of it."""
    row = db.execute(f"SELECT {CAR_COLUMNS} FROM cars WHERE vehicle_id = ?", (vehicle_id,)).fetchone()
    return None if row is None else _car(row)


def cars_money(db: sqlite3.Connection, limit: int | None = None) -> list[CarMoney]:
    """Cars by net earnings, highest first (ties by id); all of them without `limit`."""
    found = db.execute(f"SELECT {CAR_COLUMNS} FROM cars ORDER BY {NET} DESC, vehicle_id LIMIT ?",
                       (-1 if limit is None else limit,))
    return [_car(row) for row in found]


def owners_money(db: sqlite3.Connection, limit: int | None = None) -> list[OwnerMoney]:
    """Owners by net earnings over their cars, highest first."""
    found = db.execute(
        f"SELECT owner_id, COUNT(*), {MONEY_COLUMNS} FROM cars GROUP BY owner_id"
        f" ORDER BY SUM{NET} DESC, owner_id LIMIT ?", (-1 if limit is None else limit,))
    return [OwnerMoney(owner_id=str(o), cars=int(n), money=money(*rest)) for o, n, *rest in found]


def counts(db: sqlite3.Connection) -> tuple[int, int]:
    """(cars, owners) the ledger knows."""
    cars, owners = db.execute("SELECT COUNT(*), COUNT(DISTINCT owner_id) FROM cars").fetchone()
    return int(cars), int(owners)


def fleet_money(db: sqlite3.Connection) -> Money:
    """The fleet's money: the sum over every car."""
    return money(*db.execute(f"SELECT {MONEY_COLUMNS} FROM cars").fetchone())


def modes_money(db: sqlite3.Connection, now_s: float) -> list[ModeMoney]:
    """What cars earned in each owner mode, per car-day and car-month of that mode, against the car payment."""
    cars_now = dict(db.execute("SELECT owner_mode, COUNT(*) FROM cars GROUP BY owner_mode").fetchall())
    open_s = dict(db.execute("SELECT owner_mode, SUM(MAX(0, ? - mode_since_s)) FROM cars"
                             " WHERE mode_since_s IS NOT NULL GROUP BY owner_mode", (now_s,)).fetchall())
    found = {str(mode): (float(seconds or 0), rest) for mode, seconds, *rest in db.execute(
        f"SELECT owner_mode, SUM(seconds), {MONEY_COLUMNS.replace('SUM(gross)', 'SUM(compute_gross)')}"
        " FROM mode_money GROUP BY owner_mode")}
    out = []
    for mode in OwnerMode:
        seconds, figures = found.get(mode.value, (0.0, (None,) * 6))
        car_days = (seconds + float(open_s.get(mode.value) or 0)) / DAY_S
        mode_money = money(*figures)
        per_day = mode_money.net / car_days if car_days > 0 else 0.0
        per_month = per_day * DAYS_PER_MONTH.value
        out.append(ModeMoney(owner_mode=mode, cars=int(cars_now.get(mode.value, 0)), car_days=car_days,
                             money=mode_money, net_per_car_day=per_day, net_per_car_month=per_month,
                             payment_share=per_month / CAR_PAYMENT.value))
    return out
