"""The node view's rows: which cars, in what order, and the text of one row. Pure.

The order is a list of vehicle ids. New cars are appended as they arrive (O(new cars) per
refresh). A full sort or filter pass is O(n log n) / O(n): it runs when the operator asks,
and again automatically only while the fleet is small enough (`auto_resort_limit`) for it to
be cheap, so that one refresh stays the cost of the rows on screen with a million cars.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tui.store import STATE_ORDER, CarRow, FleetStore


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the node view: header, width, and how to sort and show a car."""

    key: str
    title: str
    width: int
    sort_key: Callable[[CarRow], float | str]
    text: Callable[[CarRow], str]
    right: bool = False


def _num(value: float) -> str:
    return f"{value:,.0f}" if value else "-"


_STATE_RANK = {code: i for i, code in enumerate(STATE_ORDER)}

COLUMNS: tuple[Column, ...] = (
    Column("id", "VEHICLE", 18, lambda c: c.vehicle_id, lambda c: c.vehicle_id),
    Column("state", "ST", 2, lambda c: _STATE_RANK.get(c.code, 99), lambda c: c.code),
    Column("hw", "HW", 3, lambda c: c.hardware, lambda c: c.hardware or "?"),
    Column("soc", "SOC", 4, lambda c: c.soc if c.soc is not None else -1.0,
           lambda c: f"{c.soc:.0%}" if c.soc is not None else "-", right=True),
    Column("free", "FREE", 7, lambda c: c.free_tops, lambda c: _num(c.free_tops), right=True),
    Column("used", "USED", 7, lambda c: c.tops_in_use, lambda c: _num(c.tops_in_use), right=True),
    Column("shard", "SHARD", 16, lambda c: c.shard, lambda c: c.shard or "-"),
    Column("reason", "NOT COMPUTING BECAUSE", 22, lambda c: c.reason, lambda c: c.reason or "-"),
    Column("earned", "EARNED", 9, lambda c: c.earned if c.earned is not None else -1.0,
           lambda c: f"{c.earned:,.2f}" if c.earned is not None else "-", right=True),
)
COLUMN_KEYS: tuple[str, ...] = tuple(c.key for c in COLUMNS)
_BY_KEY = {c.key: c for c in COLUMNS}


def format_cells(car: CarRow) -> list[str]:
    """The cells of one row, padded to their column widths."""
    cells = []
    for column in COLUMNS:
        text = column.text(car)[: column.width]
        cells.append(text.rjust(column.width) if column.right else text.ljust(column.width))
    return cells


def header_cells(sort_key: str | None, reverse: bool) -> list[str]:
    """The header cells, the sorted column marked with an arrow."""
    cells = []
    for column in COLUMNS:
        title = column.title + (("▼" if reverse else "▲") if column.key == sort_key else "")
        title = title[: max(column.width, len(column.title))]
        cells.append(title.rjust(column.width) if column.right else title.ljust(column.width))
    return cells


@dataclass(frozen=True, slots=True)
class RowFilter:
    """`/` filter text: a substring, `~regex`, either prefixed with `!` to invert."""

    text: str = ""

    @property
    def inverse(self) -> bool:
        return self.text.startswith("!")

    @property
    def pattern(self) -> re.Pattern[str] | None:
        """The compiled pattern, or None for an empty filter; raises `re.error` if malformed."""
        body = self.text[1:] if self.inverse else self.text
        if not body:
            return None
        if body.startswith("~"):
            return re.compile(body[1:])
        return re.compile(re.escape(body), re.IGNORECASE)


def searchable(car: CarRow) -> str:
    """The text a filter is matched against."""
    return f"{car.vehicle_id} {car.code} {car.hardware} {car.shard} {car.job_id} {car.reason} {car.gateway}"


class NodeOrder:
    """The ordered, filtered list of vehicle ids the node view scrolls through."""

    def __init__(self, *, auto_resort_limit: int = 50_000, resort_every_s: float = 2.0) -> None:
        self.ids: list[str] = []
        self.sort_key: str | None = None
        self.reverse = False
        self.filter = RowFilter()
        self.auto_resort_limit = auto_resort_limit
        self.resort_every_s = resort_every_s
        self._matcher: re.Pattern[str] | None = None
        self._seen = 0  # how much of `store.arrival` has been considered
        self._sorted_version = -1
        self._sorted_at: float | None = None

    def set_sort(self, key: str | None, reverse: bool = False) -> None:
        if key is not None and key not in _BY_KEY:
            raise ValueError(f"no column {key!r}")
        self.sort_key, self.reverse = key, reverse
        self._sorted_version = -1

    def set_filter(self, text: str) -> None:
        """Use a new filter; raises `re.error` (and keeps the old one) if it does not compile."""
        candidate = RowFilter(text)
        self._matcher = candidate.pattern
        self.filter = candidate
        self._sorted_version = -1

    def _keep(self, car: CarRow) -> bool:
        if self._matcher is None:
            return True
        return (self._matcher.search(searchable(car)) is not None) != self.filter.inverse

    def rebuild(self, store: FleetStore) -> None:
        """A full pass: filter and sort every car (O(n log n)); run on demand."""
        cars = store.cars
        ids = [vid for vid in store.arrival if self._keep(cars[vid])] if self._matcher else list(store.arrival)
        if self.sort_key is not None:
            key = _BY_KEY[self.sort_key].sort_key
            ids.sort(key=lambda vid: key(cars[vid]), reverse=self.reverse)
        self.ids = ids
        self._seen = len(store.arrival)
        self._sorted_version = store.cars_version

    def sync(self, store: FleetStore, now: float) -> bool:
        """Bring the order up to date cheaply; return True if the rows may have moved."""
        dynamic = self.sort_key is not None or self._matcher is not None
        small = len(store.cars) <= self.auto_resort_limit
        due = self._sorted_at is None or now - self._sorted_at >= self.resort_every_s
        if self._sorted_version < 0 or (dynamic and small and due and self._sorted_version != store.cars_version):
            self.rebuild(store)
            self._sorted_at = now
            return True
        if self._seen == len(store.arrival):
            return False
        new = store.arrival[self._seen :]
        self._seen = len(store.arrival)
        self.ids.extend(vid for vid in new if self._keep(store.cars[vid]))
        return True


def state_strip(store: FleetStore) -> list[tuple[str, int]]:
    """Totals by state code, in a fixed order, as `condor_status -compact` ends its listing."""
    counts = store.state_counts
    return [(code, counts[code]) for code in STATE_ORDER if counts[code]]
