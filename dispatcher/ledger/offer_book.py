"""The standing offers a restarted dispatcher reads back: written in bulk, as one statement per batch.

A batch is bound as one JSON array and unpacked by SQLite (`json_each`), so that the writer's
thread takes the GIL once per statement rather than once per row (see `dispatcher.ledger.writer`);
Python's `repr` of a float and SQLite's parsing of it give back the same double.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

COLUMNS = 14  # of offer_book
UNPACK = ", ".join(f"value->>{i}" for i in range(COLUMNS))


def as_json(rows: Sequence[object]) -> str | None:
    """The rows as one JSON array, None if a value has no exact JSON form (NaN, infinity)."""
    try:
        return json.dumps(rows, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return None


def save_offers(db: sqlite3.Connection, standing: list[tuple[object, ...]], gone: list[str]) -> None:
    """Forget the offers of the cars in `gone`, then keep (or replace) the `standing` rows."""
    if gone:
        db.execute("DELETE FROM offer_book WHERE vehicle_id IN (SELECT value FROM json_each(?))", (json.dumps(gone),))
    packed = as_json(standing)
    if packed is None:  # row by row, as SQLite binds them
        db.executemany(f"INSERT OR REPLACE INTO offer_book VALUES ({', '.join('?' * COLUMNS)})", standing)
    elif standing:
        db.execute(f"INSERT OR REPLACE INTO offer_book SELECT {UNPACK} FROM json_each(?)", (packed,))
