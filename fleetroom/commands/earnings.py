"""Print the owners' money from the dispatcher's ledger: per car, per owner, per owner mode, or the fleet.

Every figure is the ledger's: compute income, the owner's share of robotaxi fares, the energy
cost of both, and net = gross - energy cost. `--by mode` sets what each owner mode earned per
car per day and per month (simulated time) against an assumed monthly car payment: the essay's
"mobility becomes free" as a figure, labelled as a claim; the fare model's assumptions follow.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

from fleetroom.common import DEFAULT_LEDGER, CliError, whole

FORMATS = ("table", "csv", "json")
BY = ("car", "owner", "mode", "fleet")
LEDGER_PATH = DEFAULT_LEDGER  # the dispatcher's default --db


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", type=Path, default=LEDGER_PATH, metavar="PATH",
                        help="the dispatcher's SQLite ledger, the file it was given with --db, opened read-only "
                        "(default: %(default)s, the dispatcher's default)")
    parser.add_argument("--by", choices=BY, default="fleet", help="one row per car, owner, owner mode, or the fleet "
                        "with its modes (default: %(default)s)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="default: %(default)s")
    parser.add_argument("--top", type=whole(1, 10_000_000), default=None, metavar="N",
                        help="only the N cars or owners with the highest net")


def _open(path: Path) -> sqlite3.Connection:
    """The ledger, read-only: a URI built by pathlib, so a `#` or `?` in the path names no other file."""
    if not path.is_file():
        raise CliError(f"no ledger at {path} (the dispatcher's --db file; give it with --ledger PATH)")
    try:
        return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise CliError(f"cannot open the ledger {path}: {exc}") from None


def _money(money: Any) -> dict[str, Any]:
    return {"compute": round(money.compute_gross, 6), "robotaxi": round(money.robotaxi_gross, 6),
            "trips": money.robotaxi_trips, "energy_cost": round(money.energy_cost, 6), "net": round(money.net, 6)}


def _per_day(car_days: float, per_day: float, per_month: float, share: float) -> dict[str, float | None]:
    """Per car-day figures, None (shown as -) for a mode no car has spent time in."""
    known = car_days > 0
    return {"net_per_car_day": round(per_day, 4) if known else None,
            "net_per_car_month": round(per_month, 2) if known else None,
            "of_car_payment": round(share, 4) if known else None}


def rows_for(db: sqlite3.Connection, by: str, top: int | None) -> list[dict[str, Any]]:
    """The rows of one table, as the ledger says."""
    from dispatcher.ledger import earnings as book

    if by == "car":
        return [{"car": c.vehicle_id, "owner": c.owner_id, "mode": c.owner_mode.value, **_money(c.money)}
                for c in book.cars_money(db, top)]
    if by == "owner":
        return [{"owner": o.owner_id, "cars": o.cars, **_money(o.money)} for o in book.owners_money(db, top)]
    if by == "mode":
        row = db.execute("SELECT sim_s FROM clock WHERE id = 1").fetchone()
        return [{"mode": m.owner_mode.value, "cars_now": m.cars, "car_days": round(m.car_days, 3), **_money(m.money),
                 **_per_day(m.car_days, m.net_per_car_day, m.net_per_car_month, m.payment_share)}
                for m in book.modes_money(db, float(row[0]) if row else 0.0)]
    cars, owners = book.counts(db)
    return [{"cars": cars, "owners": owners, **_money(book.fleet_money(db))}]


def notes(by: str) -> list[str]:
    """What a reader must know to read a mode table: the claim, the payment and the model's assumptions."""
    if by != "mode":
        return []
    from protocol.owners import ASSUMPTIONS, CAR_PAYMENT, CLAIM_FREE_MOBILITY

    lines = [f"{CLAIM_FREE_MOBILITY}; model: of_car_payment = net per car-month / an assumed car payment of "
             f"{CAR_PAYMENT.value:,.0f} USD a month (simulated days; money in USD)", "assumptions:"]
    return lines + [f"  {a.name} = {a.value:g} {a.unit} ({a.source})" for a in ASSUMPTIONS]


def render(rows: list[dict[str, Any]], fmt: str, extra: list[str]) -> str:
    """The rows as an aligned table, CSV or JSON."""
    if fmt == "json":
        return json.dumps({"rows": rows, "notes": extra}, indent=2)
    if not rows:
        return "no cars in the ledger yet"
    columns = list(rows[0])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) if i < 1 else c.upper().rjust(w) for i, (c, w) in
                       enumerate(zip(columns, widths, strict=True)))]
    lines += ["  ".join(v.ljust(w) if i < 1 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
              for r in cells]
    return "\n".join(lines + extra)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def run(args: argparse.Namespace) -> int:
    db = _open(args.ledger)
    try:
        rows = rows_for(db, args.by, args.top)
    except sqlite3.Error as exc:
        raise CliError(f"{args.ledger} is not a fleetroom ledger of this version ({exc})") from None
    finally:
        db.close()
    print(render(rows, args.format, notes(args.by)))
    return 0
