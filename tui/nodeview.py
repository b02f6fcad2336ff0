"""The node view's rows: which cars, in what order, and the text of one row. Pure.

The order is a list of vehicle ids. New cars are appended as they arrive (O(new cars) per
refresh). A full sort or filter pass is O(n log n) / O(n): inline while the fleet is small
(`auto_resort_limit`), in a worker thread above that (`OrderJob`), so that one refresh stays
the cost of the rows on screen with a million cars and the operator's sort never stalls a paint.
"""

from __future__ import annotations

import heapq
import itertools
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
TELEMETRY_COLUMNS: tuple[str, ...] = ("soc", "used", "shard")  # live only while the car's telemetry is read
_BY_KEY = {c.key: c for c in COLUMNS}
SORT_RUN = 1 << 16  # keys a single C sort takes at once in `sort_in_runs`


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


def sort_in_runs(ids: list[str], keys: list[float] | list[str], reverse: bool, run: int = SORT_RUN) -> list[str]:
    """`ids` ordered by `keys` (stable), sorted in runs of `run` and merged.

    Meant for a worker thread: a C sort holds the GIL throughout (about 0.2-0.5 s for a million
    keys), which would freeze the paint; a run holds it ~10 ms and the merge is interruptible.
    """
    n = len(ids)
    by_key = keys.__getitem__
    runs = [sorted(range(i, min(i + run, n)), key=by_key, reverse=reverse) for i in range(0, n, run)]
    merged = runs[0] if len(runs) == 1 else heapq.merge(*runs, key=by_key, reverse=reverse)
    return [ids[i] for i in merged] if runs else []


@dataclass(frozen=True, slots=True)
class OrderJob:
    """One full filter-and-sort pass over the first `count` cars to arrive, runnable off the UI thread.

    It reads the store while the MQTT worker writes it: `arrival` is append-only and rows are
    read field by field, so the pass sees each car as it was at some moment during the pass.
    """

    store: FleetStore
    count: int
    version: int
    generation: int
    matcher: re.Pattern[str] | None
    inverse: bool
    sort_key: str | None
    reverse: bool

    def run(self) -> list[str]:
        """The ordered, filtered ids."""
        cars = self.store.cars
        ids = list(itertools.islice(self.store.arrival, self.count))
        if self.matcher is not None:
            search, inverse = self.matcher.search, self.inverse
            ids = [vid for vid in ids if (search(searchable(cars[vid])) is not None) != inverse]
        if self.sort_key is None:
            return ids
        key = _BY_KEY[self.sort_key].sort_key
        keys = [key(cars[vid]) for vid in ids]
        return sort_in_runs(ids, keys, self.reverse)  # type: ignore[arg-type]


class NodeOrder:
    """The ordered, filtered list of vehicle ids the node view scrolls through.

    Up to `auto_resort_limit` cars a full pass runs inline, in `sync`, at most every
    `resort_every_s`. Above it the app runs `job()` in a worker thread when `due()` says so
    and hands the result to `adopt`; the automatic interval then stretches to ten times what
    the last pass took, so re-sorting a million cars costs a tenth of a core at most.
    """

    def __init__(self, *, auto_resort_limit: int = 50_000, resort_every_s: float = 2.0) -> None:
        self.ids: list[str] = []
        self.sort_key: str | None = None
        self.reverse = False
        self.filter = RowFilter()
        self.auto_resort_limit = auto_resort_limit
        self.resort_every_s = resort_every_s
        self.generation = 0  # bumped by every change of sort or filter: older passes are discarded
        self.pass_seconds = 0.0  # what the last background pass took
        self._matcher: re.Pattern[str] | None = None
        self._seen = 0  # how much of `store.arrival` has been considered
        self._sorted_version = -1
        self._sorted_at: float | None = None

    def set_sort(self, key: str | None, reverse: bool = False) -> None:
        if key is not None and key not in _BY_KEY:
            raise ValueError(f"no column {key!r}")
        self.sort_key, self.reverse = key, reverse
        self._changed()

    def set_filter(self, text: str) -> None:
        """Use a new filter; raises `re.error` (and keeps the old one) if it does not compile."""
        candidate = RowFilter(text)
        self._matcher = candidate.pattern
        self.filter = candidate
        self._changed()

    def _changed(self) -> None:
        self.generation += 1
        self._sorted_version = -1

    def invalidate(self) -> None:
        """Owe a full pass now (the operator asked to re-sort)."""
        self._changed()

    def _keep(self, car: CarRow) -> bool:
        if self._matcher is None:
            return True
        return (self._matcher.search(searchable(car)) is not None) != self.filter.inverse

    @property
    def settled(self) -> bool:
        """Whether the ids follow the current sort and filter (False while a pass is owed)."""
        return self._sorted_version >= 0

    def job(self, store: FleetStore) -> OrderJob:
        """A full pass over the cars known now, with the current sort and filter."""
        return OrderJob(store, len(store.arrival), store.cars_version, self.generation, self._matcher,
                        self.filter.inverse, self.sort_key, self.reverse)

    def adopt(self, job: OrderJob, ids: list[str], store: FleetStore, now: float | None = None) -> bool:
        """Take a finished pass's result unless the sort or filter changed meanwhile; True if taken."""
        if job.generation != self.generation:
            return False
        self.ids = ids
        self._seen = job.count
        self._sorted_version = job.version
        self._sorted_at = now if now is not None else self._sorted_at
        self._append_new(store)
        return True

    def rebuild(self, store: FleetStore) -> None:
        """A full pass, inline: filter and sort every car (O(n log n))."""
        job = self.job(store)
        self.adopt(job, job.run(), store)

    def due(self, store: FleetStore, now: float) -> bool:
        """Whether a full pass is owed: the sort or filter changed, or a dynamic order is stale."""
        if self._sorted_version < 0:
            return True
        dynamic = self.sort_key is not None or self._matcher is not None
        every = self.resort_every_s if len(store.cars) <= self.auto_resort_limit else max(
            self.resort_every_s, 10 * self.pass_seconds)
        fresh = self._sorted_at is not None and now - self._sorted_at < every
        return dynamic and not fresh and self._sorted_version != store.cars_version

    def sync(self, store: FleetStore, now: float) -> bool:
        """Bring the order up to date cheaply; return True if the rows may have moved.

        A full pass runs here only for a fleet within `auto_resort_limit`: above it, see `job`."""
        if len(store.arrival) <= self.auto_resort_limit and self.due(store, now):
            self.rebuild(store)
            self._sorted_at = now
            return True
        return self._append_new(store)

    def _append_new(self, store: FleetStore) -> bool:
        """Append the cars that arrived since the last look, filtered (O(new cars))."""
        if self._seen >= len(store.arrival):
            return False
        new = store.arrival[self._seen :]
        self._seen += len(new)
        if self._matcher is None:
            self.ids.extend(new)  # at C speed: a million cars arriving is 1M appends between paints
        else:
            cars = store.cars
            self.ids.extend([vid for vid in new if self._keep(cars[vid])])
        return True


def state_strip(store: FleetStore) -> list[tuple[str, int]]:
    """Totals by state code, in a fixed order, as `condor_status -compact` ends its listing."""
    counts = store.state_counts
    return [(code, counts[code]) for code in STATE_ORDER if counts[code]]
