"""The job view: queued and running jobs with progress, updated by key, only what changed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from protocol import WaitReason
from tui.details import bar
from tui.jobs import JobRow
from tui.store import FleetStore

JOB_COLUMNS = ("job", "name", "status", "progress", "shards", "preempted", "cost", "why waiting")


def job_cells(row: JobRow) -> tuple[str, ...]:
    """The cells of one job's row."""
    state = row.state
    shards = f"{state.shards_done}/{state.shards_total} ({state.shards_running} running)" if state else "-"
    waits = why_waiting(state.wait_reasons, state.reason) if state else ""
    return (
        row.job_id,
        row.name[:28],
        row.status,
        bar(row.progress, 12),
        shards,
        str(state.preemptions) if state else "-",
        f"{state.cost:,.4f}" if state else "-",
        waits or "-",
    )


WHY_WIDTH = 60  # what 160 columns leave for the reasons after the other columns


def why_waiting(reasons: Sequence[WaitReason], reason: str, width: int = WHY_WIDTH) -> str:
    """The reasons a job waits, whole ones only, and how many more its drill-down shows (enter)."""
    texts = [f"{w.cars_failing:,} fail {w.requirement}" for w in reasons] or ([reason] if reason else [])
    shown: list[str] = []
    for i, text in enumerate(texts):
        rest = len(texts) - i - 1
        tail = f" (+{rest} more: enter)" if rest else ""
        if shown and len("; ".join([*shown, text]) + tail) > width:
            return "; ".join(shown) + f" (+{rest + 1} more: enter)"
        shown.append(text)
    line = "; ".join(shown)
    return line if len(line) <= width else line[: width - 1] + "…"


STATUS_RANK = {"running": 0, "queued": 1, "submitted": 2}


class JobTable(DataTable[str]):
    """Jobs by id; rows are added, and changed cells updated, from the store's job book."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "open", "Open job")]

    class JobSelected(Message):
        """The operator opened a job."""

        def __init__(self, job_id: str) -> None:
            super().__init__()
            self.job_id = job_id

    def __init__(self, store: FleetStore, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.store = store
        self._versions: dict[str, int] = {}
        self._statuses: dict[str, str] = {}
        self._seen: dict[str, int] = {}
        self._book_version = -1

    def on_mount(self) -> None:
        for title in JOB_COLUMNS:
            self.add_column(title, key=title)

    def update_jobs(self) -> None:
        """Add new jobs and update the cells of changed ones; nothing if the book did not change."""
        book = self.store.jobs
        if book.version == self._book_version:
            return
        self._book_version = book.version
        statuses_changed = False
        for row in book.rows.values():
            if self._versions.get(row.job_id) == row.version:
                continue
            cells = job_cells(row)
            if self._statuses.get(row.job_id) != row.status:
                self._statuses[row.job_id] = row.status
                statuses_changed = True
            if row.job_id not in self._versions:
                self._seen[row.job_id] = len(self._seen)
                self.add_row(*cells, key=row.job_id)
            else:
                for column, value in zip(JOB_COLUMNS, cells, strict=True):
                    try:
                        self.update_cell(row.job_id, column, value)
                    except RowDoesNotExist:
                        break
            self._versions[row.job_id] = row.version
        if statuses_changed:
            self.sort("status", "job", key=self._order)

    def _order(self, cells: tuple[str, str]) -> tuple[int, int]:
        """Running, then queued, then submitted jobs, oldest first; finished ones after, newest first."""
        status, job_id = cells
        rank = STATUS_RANK.get(status, 3)
        seen = self._seen[job_id]
        return (rank, seen if rank < 3 else -seen)

    @property
    def selected(self) -> str | None:
        """The job id under the cursor."""
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return str(key.value) if key.value is not None else None

    def action_open(self) -> None:
        if self.selected is not None:
            self.post_message(self.JobSelected(self.selected))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.JobSelected(str(event.row_key.value)))
