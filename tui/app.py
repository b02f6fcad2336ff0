"""The fleetroom control room: a Textual app over one MQTT connection and a plain fleet store.

Data flows MQTT worker -> `FleetStore` (one call per message) -> a paint timer -> widgets.
The worker never touches a widget and never posts a Textual message per MQTT message.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from functools import partial
from typing import Any, ClassVar, TypeVar

import aiomqtt
from pydantic import ValidationError
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from mqttlink import (
    Backoff,
    BrokerUrl,
    LinkEvent,
    NoDispatcher,
    OperatorCommand,
    OperatorLink,
    client_id_of,
    new_job_id,
    stay_connected,
)
from protocol import JobSubmission, MatchPolicy, Topics, utc_now
from tui import panels
from tui.chartdata import CHARTS, chart_data
from tui.charts import HistoryChart
from tui.dialogs import ConfirmScreen
from tui.earningsview import EarningsView
from tui.feed import ingest_guarded, run_feed
from tui.jobview import JobTable
from tui.nodeview import NodeOrder, state_strip
from tui.power import PowerScreen
from tui.screens import CarScreen, HelpScreen, JobForm, JobScreen, SubmitJobScreen
from tui.store import FleetStore
from tui.watch import TelemetryWatch
from tui.widgets import NodeTable

log = logging.getLogger(__name__)


CommandT = TypeVar("CommandT", bound=OperatorCommand)
PUBLISHING_ACTIONS = frozenset({"submit_job", "cancel_selected_job", "drive_away_selected"})


class FleetroomApp(App[None]):
    """The control room: header, node view, jobs, history; drill-downs; operator commands."""

    CSS_PATH = "fleetroom.tcss"
    TITLE = "fleetroom control room"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help"),
        Binding("n", "show_tab('nodes')", "Nodes"),
        Binding("j", "show_tab('jobs')", "Jobs"),
        Binding("h", "show_tab('history')", "History"),
        Binding("w", "power", "Power and hours", show=False),
        Binding("e", "show_tab('earnings')", "Earnings"),
        Binding("slash", "filter", "Filter"),
        Binding("r", "resort", "Re-sort", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("p", "toggle_pause", "Pause"),
        Binding("ctrl+n", "submit_job", "Submit job"),
        Binding("c", "cancel_selected_job", "Cancel job", show=False),
        Binding("d", "drive_away_selected", "Drive away", show=False),
    ]

    def __init__(self, broker_url: BrokerUrl, topics: Topics, *, read_only: bool = False,
                 title: str = "fleetroom control room", store: FleetStore | None = None,
                 clock: Callable[[], float] = time.monotonic, refresh_s: float = 0.25,
                 connect: bool = True, auto_resort_limit: int = 50_000, backoff: Backoff | None = None,
                 watch: TelemetryWatch | None = None) -> None:
        super().__init__()
        self.broker_url = broker_url
        self.topics = topics
        self.read_only = read_only
        self.title = title
        self.store = store or FleetStore(topics)
        self.order = NodeOrder(auto_resort_limit=auto_resort_limit)
        self.telemetry_watch = watch or TelemetryWatch()  # the cars whose telemetry the feed reads
        self.clock = clock
        self.refresh_s = refresh_s
        self.connect = connect
        self.backoff = backoff
        self.paused = False
        self.sender = "observer" if read_only else "operator"
        self.client: aiomqtt.Client | None = None
        self.operator = OperatorLink(self._publish_on_link, topics, sender=self.sender, sim_time=self._sim_time,
                                     dispatcher_online=lambda: self.store.dispatcher_online)
        self.published: deque[OperatorCommand] = deque(maxlen=1_000)  # what this session sent
        self._painted_version = -1
        self._shown: dict[str, str] = {}

    # layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Vertical(id="header"):
            yield Static("", id="totals", markup=False)
            yield Static("", id="cars", markup=False)
            yield Static("", id="equivalences", markup=False)
            yield Static("", id="faults", markup=False)
            yield Static(panels.note_line(), id="note", markup=False)
        yield Static("", id="health", markup=False)
        with TabbedContent(initial="nodes", id="tabs"):
            with TabPane("Nodes", id="nodes"):
                yield Input(placeholder="filter: text, ~regex, !inverse; enter to apply, esc to clear",
                            id="filter")
                yield Static("", id="strip", markup=False)
                yield NodeTable(self.store, self.order, id="node-table")
            with TabPane("Jobs", id="jobs"):
                yield JobTable(self.store, id="job-table")
            with TabPane("History", id="history"), Horizontal(id="history-grid"):
                with Grid(id="charts"):
                    for i, _ in enumerate(CHARTS):
                        yield HistoryChart(id=f"chart-{i}")
                yield Static("", id="hardware", markup=False)
            with TabPane("Earnings", id="earnings"):
                yield EarningsView(self.store.earnings, id="earnings-view")
        yield Footer()

    def on_mount(self) -> None:
        statics = ["health", "totals", "cars", "equivalences", "faults", "strip", "hardware"]
        self._statics: dict[str, Static] = {name: self.query_one(f"#{name}", Static) for name in statics}
        self._charts = [self.query_one(f"#chart-{i}", HistoryChart) for i, _ in enumerate(CHARTS)]
        self._node_table = self.query_one(NodeTable)
        self._job_table = self.query_one(JobTable)
        self._tabs = self.query_one(TabbedContent)
        self.paint()
        self.set_interval(self.refresh_s, self.paint)
        self.query_one(NodeTable).focus()
        if self.connect:
            self.run_link()
            if not self.read_only:
                self.run_commands()

    # the MQTT worker -----------------------------------------------------------------------
    @work(exclusive=True, group="mqtt", exit_on_error=False)
    async def run_link(self) -> None:
        """Read every car's state and the view's telemetry (`tui.feed`), through broker restarts."""
        await run_feed(self.broker_url, self.store, client_id=client_id_of(self.broker_url, self.sender),
                       watch=self.telemetry_watch, clock=self.clock, on_state=self._on_link, backoff=self.backoff)

    def _on_link(self, event: LinkEvent) -> None:
        self.store.link_changed(event.state.value, event.reason, event.attempt)

    @work(exclusive=True, group="commands", exit_on_error=False)
    async def run_commands(self) -> None:
        """Hold the connection operator commands go out on (the feed reads on a connection of its own)."""
        await stay_connected(self.broker_url, client_id_of(self.broker_url, self.sender), self._command_session,
                             backoff=self.backoff, must_connect_first=False)

    async def _command_session(self, client: aiomqtt.Client) -> None:
        self.client = client
        try:
            async for _ in client.messages:  # subscribed to nothing: this ends when the connection is lost
                pass
        finally:
            self.client = None

    @property
    def ready(self) -> bool:
        """Reading the broker and, unless read-only, able to send commands."""
        return self.store.link.state == "connected" and (self.read_only or self.client is not None)

    def _ingest(self, topic: str, payload: object) -> None:
        """Hand one message to the store as the feed does (tests drive the app's store with it)."""
        ingest_guarded(self.store, topic, payload)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """If the MQTT worker itself fails, say so in the health bar rather than go quiet."""
        if event.worker.group in ("mqtt", "commands") and event.state is WorkerState.ERROR:
            self.store.link_changed("failed", str(event.worker.error))
            log.error("the MQTT worker failed: %r", event.worker.error)

    # painting -------------------------------------------------------------------------------
    def _show(self, widget_id: str, text: str) -> None:
        """Update a Static only when its text changed (an update costs a layout pass)."""
        if self._shown.get(widget_id) != text:
            self._shown[widget_id] = text
            self._statics[widget_id].update(text)

    def paint(self) -> None:
        """Apply the store to the widgets: the timer's job, never the worker's."""
        store = self.store
        store.tick(self.clock())
        health = panels.health_line(store, str(self.broker_url), read_only=self.read_only, paused=self.paused)
        self._show("health", f"{self.title} · {health}")
        if self.paused:
            return
        self._show("totals", panels.totals_line(store))
        self._show("cars", panels.cars_line(store))
        self._show("equivalences", panels.equivalence_line(store))
        self._show("faults", panels.faults_line(store))
        now = self.clock()
        moved = self.order.sync(store, now)
        self._node_table.start_order_pass(now)
        strip = "  ".join(f"{code} {count:,}" for code, count in state_strip(store))
        busy = "" if self.order.settled else f"   ({'filtering' if self.order.filter.text else 'sorting'}…)"
        live = len(self.telemetry_watch.subscribed)
        watched = f"   |   telemetry read for the {live:,} cars on show" if live else ""
        self._show("strip", f"{strip or 'no cars yet'}   |   showing {len(self.order.ids):,} of "
                            f"{len(store.cars):,}{busy}{watched}")
        if moved or store.cars_version != self._painted_version:
            self._painted_version = store.cars_version
            self._node_table.update_rows()
        self._follow_view(now)
        self._job_table.update_jobs()
        if self._tabs.active == "history":
            self.paint_history()

    def _follow_view(self, now: float) -> None:
        """Tell the watch which cars are on show: the car screens open, and the node table's rows."""
        pinned = [screen.vehicle_id for screen in self.screen_stack if isinstance(screen, CarScreen)]
        visible = self._node_table.visible_ids() if self._tabs.active == "nodes" else []
        self.telemetry_watch.want(pinned, visible, now)

    def paint_history(self) -> None:
        for chart, spec in zip(self._charts, CHARTS, strict=True):
            chart.show(chart_data(spec, self.store.history.series, self.store.sample_every_s))
        width = self._statics["hardware"].content_size.width or 40
        self._show("hardware", "by hardware generation\n\n" + "\n".join(panels.hardware_lines(self.store, width)))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """In read-only mode the publishing keys are hidden from the footer and do nothing."""
        return not (self.read_only and action in PUBLISHING_ACTIONS)

    # navigation -----------------------------------------------------------------------------
    async def action_show_tab(self, tab: str) -> None:
        while len(self.screen_stack) > 1:  # over a drill-down or panel, a tab key means "go to that tab"
            await self.pop_screen()
        self.query_one(TabbedContent).active = tab
        if tab == "nodes":
            self.query_one(NodeTable).focus()
        elif tab == "jobs":
            self.query_one(JobTable).focus()
        self.paint()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_power(self) -> None:
        self.push_screen(PowerScreen(self.store))

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self.notify("updates paused" if self.paused else "updates resumed")
        self.paint()

    async def action_filter(self) -> None:
        await self.action_show_tab("nodes")
        field = self.query_one("#filter", Input)
        field.add_class("active")
        field.focus()

    @on(Input.Submitted, "#filter")
    def apply_filter(self, event: Input.Submitted) -> None:
        self.set_filter(event.value)

    def set_filter(self, text: str) -> None:
        """Filter the node view; a malformed regex is the operator's typo, shown, not a crash."""
        try:
            self.order.set_filter(text.strip())
        except re.error as exc:
            self.notify(f"bad filter: {exc}", severity="error")
            return
        table = self.query_one(NodeTable)
        table.cursor = 0
        table.update_rows()
        if not text.strip():
            self.query_one("#filter", Input).remove_class("active")
        table.focus()
        self.paint()

    def action_resort(self) -> None:
        self.order.invalidate()
        self._painted_version = -1  # the rows moved: repaint the table even if no car changed
        self.paint()

    def action_clear_filter(self) -> None:
        """`esc` on the main screen: clear the filter and go back to the table."""
        field = self.query_one("#filter", Input)
        if field.value or field.has_class("active") or self.order.filter.text:
            field.value = ""
            self.set_filter("")

    @on(NodeTable.CarSelected)
    def open_car(self, event: NodeTable.CarSelected) -> None:
        """Drill down: the feed subscribes to the car's telemetry and its ledger figures (`tui.feed`)."""
        self.push_screen(CarScreen(self.store, event.vehicle_id))
        self.store.earnings.watched.add(event.vehicle_id)
        self.telemetry_watch.want([event.vehicle_id], self.telemetry_watch.wanted, self.clock())

    @on(NodeTable.OrderChanged)
    def _order_changed(self) -> None:
        self._painted_version = -1
        self.paint()

    @on(JobTable.JobSelected)
    def open_job(self, event: JobTable.JobSelected) -> None:
        self.push_screen(JobScreen(self.store, event.job_id))

    # commands -------------------------------------------------------------------------------
    def _sim_time(self) -> datetime:
        """The simulation time of the dispatcher's last summary, else wall time."""
        summary = self.store.summary
        return summary.sim_time if summary is not None else utc_now()

    async def _publish_on_link(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        client = self.client
        if client is None:
            raise aiomqtt.MqttError("not connected to the broker")
        await client.publish(topic, payload, qos=qos, retain=retain)

    async def command(self, send: Callable[[OperatorLink], Awaitable[CommandT]]) -> CommandT | None:
        """Send one operator command through the link, or say why not: read-only, disconnected,
        no dispatcher online for a command only a dispatcher reads, or the publish failed."""
        if self.read_only:
            self.notify("read-only mode: nothing is published", severity="warning")
            return None
        if self.client is None:
            self.notify("not connected to the broker; try again when connected", severity="error")
            return None
        try:
            command = await send(self.operator)
        except NoDispatcher as exc:
            self.notify(str(exc), severity="error")
            return None
        except aiomqtt.MqttError as exc:
            self.notify(f"publish failed: {exc}", severity="error")
            return None
        self.published.append(command)
        return command

    def action_submit_job(self) -> None:
        if self.read_only:
            self.notify("read-only mode: cannot submit jobs", severity="warning")
            return
        self.push_screen(SubmitJobScreen(), self._submit_form)

    async def _submit_form(self, form: JobForm | None) -> None:
        if form is None:
            return
        try:
            job = JobSubmission(**self.operator.envelope(), job_id=new_job_id(), name=form.name,
                                total_work_tera_ops=form.total_work_tera_ops, shards=form.shards,
                                min_tops_per_car=form.min_tops_per_car,
                                max_parallel_shards=form.max_parallel_shards, priority=form.priority)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            why = f"job not submitted: {first['loc'][0] if first['loc'] else ''} {first['msg']}"
            self.notify(why, severity="error")
            self.push_screen(SubmitJobScreen(form.typed, why), self._submit_form)  # keep what was typed
            return
        if await self.command(lambda link: link.submit(job)):
            self.store.jobs.apply(job)
            self.notify(f"submitted {job.job_id} ({form.name})")
        else:
            self.push_screen(SubmitJobScreen(form.typed, "job not submitted (see the notice); the form keeps it"),
                             self._submit_form)

    def cancel_job(self, job_id: str) -> None:
        """Ask first; cancel only on yes."""
        question = f"Cancel job {job_id}? Its running shards are withdrawn; this cannot be undone."
        self.push_screen(ConfirmScreen(question, yes="Cancel the job", no="Keep it"),
                         partial(self._cancel_confirmed, job_id))

    async def _cancel_confirmed(self, job_id: str, yes: bool | None) -> None:
        if yes and await self.command(lambda link: link.cancel_job(job_id, reason="cancelled from the control room")):
            self.notify(f"asked the dispatcher to cancel {job_id}")

    async def action_cancel_selected_job(self) -> None:
        job_id = self.query_one(JobTable).selected
        if self.query_one(TabbedContent).active == "jobs" and job_id is not None:
            self.cancel_job(job_id)

    @on(JobScreen.CancelRequested)
    def _cancel_from_screen(self, event: JobScreen.CancelRequested) -> None:
        self.cancel_job(event.job_id)

    async def set_policy(self, policy: MatchPolicy) -> None:
        if await self.command(lambda link: link.set_policy(policy)):
            self.notify(f"asked the dispatcher to match by {policy.value}")

    async def drive_away(self, vehicle_id: str) -> None:
        if await self.command(lambda link: link.drive_away(vehicle_id)):
            self.notify(f"told the fleet that {vehicle_id}'s owner returns now")

    async def action_drive_away_selected(self) -> None:
        vehicle_id = self.query_one(NodeTable).selected
        if self.query_one(TabbedContent).active == "nodes" and vehicle_id is not None:
            await self.drive_away(vehicle_id)

    @on(CarScreen.DriveAwayRequested)
    async def _drive_away_from_screen(self, event: CarScreen.DriveAwayRequested) -> None:
        await self.drive_away(event.vehicle_id)

    @on(CarScreen.OwnerModeRequested)
    async def _owner_mode_from_screen(self, event: CarScreen.OwnerModeRequested) -> None:
        vehicle_id, mode = event.vehicle_id, event.owner_mode
        if await self.command(lambda link: link.set_owner_mode(vehicle_id, mode)):
            self.notify(f"asked {vehicle_id}'s fleet to let it earn by {mode.value}")

    async def add_cars(self, count: int) -> None:
        if await self.command(lambda link: link.add_cars(count)):
            self.notify(f"asked the fleet process to add {count:,} cars")

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Submit a job", "Open the job submission form", self.action_submit_job)
        for policy in MatchPolicy:
            yield SystemCommand(f"Matchmaking policy: {policy.value}", "Tell the dispatcher how to rank offers",
                                partial(self.set_policy, policy))
        yield SystemCommand("Pause / resume updates", "Freeze the display (data keeps arriving)",
                            self.action_toggle_pause)
        yield SystemCommand("Drive the selected car away", "The owner of the car under the cursor returns",
                            self.action_drive_away_selected)
        for count in (10, 100, 1_000, 10_000):
            yield SystemCommand(f"Add {count:,} cars", "Ask a fleet process that accepts it to add cars",
                                partial(self.add_cars, count))
