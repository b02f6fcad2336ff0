"""The node table: a Line API scroll view that renders only the rows on screen."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events, work
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.nodeview import COLUMN_KEYS, COLUMNS, TELEMETRY_COLUMNS, NodeOrder, OrderJob, format_cells, header_cells
from tui.store import FleetStore

ROW_WIDTH = sum(c.width for c in COLUMNS) + len(COLUMNS) - 1
TELEMETRY_CELLS = frozenset(COLUMN_KEYS.index(key) for key in TELEMETRY_COLUMNS)
STALE_STYLE = Style(dim=True)  # a car's telemetry figures when its telemetry is not subscribed: last known

STATE_STYLES = {
    "Id": Style(color="green"),
    "Bu": Style(color="cyan", bold=True),
    "Va": Style(color="yellow"),
    "Su": Style(color="magenta"),
    "Dr": Style(color="blue"),
    "On": Style(color="white"),
    "As": Style(color="bright_black"),
    "Of": Style(color="red"),
}


class NodeTable(ScrollView, can_focus=True):
    """Every car, one per line; row 0 is a sticky header. Reads a `NodeOrder` and the store."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "Top", show=False),
        Binding("end", "jump(-1)", "Bottom", show=False),
        Binding("enter", "open", "Open car"),
        Binding("s", "sort_next", "Sort"),
        Binding("S", "sort_reverse", "Reverse", show=False),
        *[Binding(str(i + 1), f"sort_by('{key}')", f"Sort by {key}", show=False) for i, key in enumerate(COLUMN_KEYS)],
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"nodetable--header", "nodetable--cursor"}

    cursor: reactive[int] = reactive(0)

    class CarSelected(Message):
        """The operator opened a car."""

        def __init__(self, vehicle_id: str) -> None:
            super().__init__()
            self.vehicle_id = vehicle_id

    class OrderChanged(Message):
        """The operator chose another sort: the app owes the node order a full pass."""

    def __init__(self, store: FleetStore, order: NodeOrder, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store = store
        self.order = order
        self.virtual_size = Size(ROW_WIDTH, 1)
        self._order_job: OrderJob | None = None  # the full pass running in a worker thread, if any

    # the order's full passes ----------------------------------------------------------------
    def start_order_pass(self, now: float) -> None:
        """Above the order's inline limit, run an owed full sort/filter pass in a worker thread."""
        order, running = self.order, self._order_job
        if len(self.store.arrival) <= order.auto_resort_limit or not order.due(self.store, now):
            return
        if running is not None and running.generation == order.generation:
            return  # the pass under way already follows the current sort and filter
        self._order_job = order.job(self.store)
        self.run_order_pass(self._order_job, now)

    @work(thread=True, group="order", exit_on_error=False)
    def run_order_pass(self, job: OrderJob, now: float) -> None:
        started = time.perf_counter()
        ids = job.run()
        self.app.call_from_thread(self._order_pass_done, job, ids, now, time.perf_counter() - started)

    def _order_pass_done(self, job: OrderJob, ids: list[str], started_at: float, seconds: float) -> None:
        if job is self._order_job:
            self._order_job = None
        self.order.pass_seconds = seconds
        if self.order.adopt(job, ids, self.store, started_at):
            self.update_rows()

    # painting -------------------------------------------------------------------------------
    def update_rows(self) -> None:
        """Called by the app's timer: resize to the order and repaint the visible lines only."""
        self.virtual_size = Size(ROW_WIDTH, len(self.order.ids) + 1)
        if self.cursor >= len(self.order.ids):
            self.cursor = max(len(self.order.ids) - 1, 0)
        self.refresh()

    def visible_ids(self) -> list[str]:
        """The vehicle ids of the rows on screen now."""
        top = int(self.scroll_y)
        return self.order.ids[top : top + max(self.size.height - 1, 0)]

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            text = " ".join(header_cells(self.order.sort_key, self.order.reverse))
            style = self.get_component_rich_style("nodetable--header")
            return Strip([Segment(text, style)], len(text)).crop_extend(scroll_x, scroll_x + width, style)
        index = scroll_y + y - 1
        if index >= len(self.order.ids):
            return Strip.blank(width, self.rich_style)
        car = self.store.cars[self.order.ids[index]]
        cells = format_cells(car)
        base = self.get_component_rich_style("nodetable--cursor") if index == self.cursor else self.rich_style
        stale = base + STALE_STYLE if not car.telemetry_live and car.rated_tops > 0 else base  # heard, not now
        segments = []
        for i, cell in enumerate(cells):
            if i:
                segments.append(Segment(" ", base))
            if i == 1 and index != self.cursor:
                style = base + STATE_STYLES[car.code]
            else:
                style = stale if i in TELEMETRY_CELLS else base
            segments.append(Segment(cell, style))
        return Strip(segments, ROW_WIDTH).crop_extend(scroll_x, scroll_x + width, base)

    # cursor and sorting ---------------------------------------------------------------------
    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        visible_rows = max(self.size.height - 1, 1)
        top = int(self.scroll_y)
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif new >= top + visible_rows:
            self.scroll_to(y=new - visible_rows + 1, animate=False)

    def _move_to(self, index: int) -> None:
        self.cursor = min(max(index, 0), max(len(self.order.ids) - 1, 0))

    def action_cursor(self, delta: int) -> None:
        self._move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * max(self.size.height - 2, 1))

    def action_jump(self, index: int) -> None:
        self._move_to(index if index >= 0 else len(self.order.ids) - 1)

    @property
    def selected(self) -> str | None:
        """The vehicle id under the cursor."""
        ids = self.order.ids
        return ids[self.cursor] if 0 <= self.cursor < len(ids) else None

    def action_open(self) -> None:
        if self.selected is not None:
            self.post_message(self.CarSelected(self.selected))

    def action_sort_by(self, key: str) -> None:
        """Sort by `key`; asking again for the same column reverses it."""
        reverse = not self.order.reverse if self.order.sort_key == key else False
        self.order.set_sort(key, reverse)
        self.update_rows()  # the new header now; the rows when the app's pass is done
        self.post_message(self.OrderChanged())

    def action_sort_next(self) -> None:
        keys = COLUMN_KEYS
        current = self.order.sort_key
        self.action_sort_by(keys[(keys.index(current) + 1) % len(keys)] if current in keys else keys[0])

    def action_sort_reverse(self) -> None:
        self.action_sort_by(self.order.sort_key or COLUMN_KEYS[0])

    def on_click(self, event: events.Click) -> None:
        """A click selects the row under the mouse; a double click opens it."""
        if event.y > 0:
            self._move_to(int(self.scroll_y) + event.y - 1)
            if event.chain == 2:
                self.action_open()
