"""Drill-down screens (a car, a job), the job submission form and the help screen."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, Sparkline, Static

from protocol.vehicle_messages import OwnerMode
from tui.details import car_lines, job_lines
from tui.store import FleetStore

HELP_TEXT = """\
[b]fleetroom control room[/b]

[b]Views[/b]   n nodes · j jobs · h history · w power and hours · enter open the car or job under the cursor · esc back
[b]Nodes[/b]   ↑ ↓ pgup pgdn home end move · s next sort column · S reverse · 1-9 sort by column
          / filter: text matches anywhere (case-insensitive), ~regex, a leading ! inverts
          (e.g. [i]HW6[/i], [i]~^car-0[/i], [i]!Of[/i]); esc or an empty filter clears it · r re-sort now
[b]Jobs[/b]    ctrl+n submit a job · c cancel the job under the cursor (or on its screen)
[b]Cars[/b]    d drive the car away (the owner returns; the fleet process must accept it)
[b]Other[/b]   p pause/resume · ctrl+p palette (policy, add cars, …) · ? this help · q or ctrl+c quit

States: Id idle (offering) · Bu busy · Va vacating · Su suspended · Dr driving · On online ·
As asleep · Of offline.   In read-only mode nothing is ever published.

The header's TOPS, cars and jobs are the dispatcher's FleetSummary. Its Fugaku, Frontier and
El Capitan figures are the essay's arithmetic: peak int8 TOPS compared with FP64 FLOPS, which
are not like for like.
"""


class HelpScreen(ModalScreen[None]):
    """The `?` screen: every key, the state codes, and what the header's figures mean."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(HELP_TEXT, id="help-text")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)


class CarScreen(Screen[None]):
    """One car: its state, why it is or is not offering, its shard, checkpoints and earnings."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("d", "drive_away", "Drive away"),
        Binding("m", "owner_mode", "Owner mode"),
    ]

    class DriveAwayRequested(Message):
        """The operator asked for this car's owner to return now."""

        def __init__(self, vehicle_id: str) -> None:
            super().__init__()
            self.vehicle_id = vehicle_id

    class OwnerModeRequested(Message):
        """The operator asked for this car's owner to let it earn by `owner_mode` from now on."""

        def __init__(self, vehicle_id: str, owner_mode: OwnerMode) -> None:
            super().__init__()
            self.vehicle_id = vehicle_id
            self.owner_mode = owner_mode

    def __init__(self, store: FleetStore, vehicle_id: str) -> None:
        super().__init__()
        self.store = store
        self.vehicle_id = vehicle_id
        store.watch(vehicle_id)

    def compose(self) -> ComposeResult:
        yield Static("", id="car-body", classes="detail", markup=False)
        yield Label("state of charge (history)", classes="spark-label")
        yield Sparkline([], id="car-soc")
        yield Label("TOPS in use (history)", classes="spark-label")
        yield Sparkline([], id="car-tops")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_body()
        self.set_interval(0.5, self.refresh_body)

    def refresh_body(self) -> None:
        self.query_one("#car-body", Static).update("\n".join(car_lines(self.store, self.vehicle_id)))
        points = self.store.car_history.get(self.vehicle_id, ())
        self.query_one("#car-soc", Sparkline).data = [p.soc for p in points]
        self.query_one("#car-tops", Sparkline).data = [p.tops_in_use for p in points]

    def action_drive_away(self) -> None:
        self.post_message(self.DriveAwayRequested(self.vehicle_id))

    def action_owner_mode(self) -> None:
        """The next owner mode after the one the ledger last booked (compute, robotaxi, both, none)."""
        booked = self.store.earnings.car(self.vehicle_id)
        current = booked.owner_mode if booked is not None else OwnerMode.COMPUTE
        modes = list(OwnerMode)
        self.post_message(self.OwnerModeRequested(self.vehicle_id, modes[(modes.index(current) + 1) % len(modes)]))


class JobScreen(Screen[None]):
    """One job: progress, shards and their cars, preemptions, validation, cost, why it waits."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("c", "cancel_job", "Cancel job"),
    ]

    class CancelRequested(Message):
        """The operator asked to cancel this job."""

        def __init__(self, job_id: str) -> None:
            super().__init__()
            self.job_id = job_id

    def __init__(self, store: FleetStore, job_id: str) -> None:
        super().__init__()
        self.store = store
        self.job_id = job_id

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("", id="job-body", classes="detail", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_body()
        self.set_interval(0.5, self.refresh_body)

    def refresh_body(self) -> None:
        job = self.store.jobs.rows.get(self.job_id)
        text = "\n".join(job_lines(job)) if job is not None else f"{self.job_id}: not heard of (yet)"
        self.query_one("#job-body", Static).update(text)

    def action_cancel_job(self) -> None:
        self.post_message(self.CancelRequested(self.job_id))


@dataclass(frozen=True, slots=True)
class JobForm:
    """What the submission form collects; the app turns it into a JobSubmission."""

    name: str
    total_work_tera_ops: float
    shards: int
    min_tops_per_car: float
    max_parallel_shards: int
    priority: int
    typed: dict[str, str] = field(default_factory=dict, compare=False)  # the fields as typed


# A small job by default, one any parked car can take: an 8B model's 1M-token batch,
# 1e6 tokens x 2 x 8e9 params = 16,000 tera-ops, in 4 shards (about 32 simulated s each on HW4).
FORM_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("name", "name", "llm batch inference 8B, 1M tokens"),
    ("total_work_tera_ops", "total work (tera-ops)", "16000"),
    ("shards", "shards", "4"),
    ("min_tops_per_car", "min TOPS per car", "100"),
    ("max_parallel_shards", "max parallel shards", "4"),
    ("priority", "priority (-100..100)", "0"),
)


class SubmitJobScreen(ModalScreen[JobForm | None]):
    """A form for a new job; returns the form, or None if cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, typed: dict[str, str] | None = None, error: str = "") -> None:
        super().__init__()
        self.typed = typed or {}  # what was typed before a refusal: shown again, not the defaults
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical(id="submit-box"):
            yield Label("[b]Submit a job[/b]")
            for key, label, default in FORM_FIELDS:
                with Horizontal(classes="form-row"):
                    yield Label(label, classes="form-label")
                    yield Input(self.typed.get(key, default), id=f"form-{key}", classes="form-input")
            yield Static(self.error, id="form-error", markup=False)
            with Horizontal(id="form-buttons"):
                yield Button("Submit", variant="primary", id="form-submit")
                yield Button("Cancel", id="form-cancel")

    def _value(self, key: str) -> str:
        return self.query_one(f"#form-{key}", Input).value.strip()

    def typed_values(self) -> dict[str, str]:
        """What is in the form's fields now, as typed."""
        return {key: self.query_one(f"#form-{key}", Input).value for key, _, _ in FORM_FIELDS}

    def read_form(self) -> JobForm:
        """The form's values; raises ValueError naming the bad field."""
        try:
            form = JobForm(
                name=self._value("name"),
                total_work_tera_ops=float(self._value("total_work_tera_ops")),
                shards=int(self._value("shards")),
                min_tops_per_car=float(self._value("min_tops_per_car")),
                max_parallel_shards=int(self._value("max_parallel_shards")),
                priority=int(self._value("priority")),
            )
        except ValueError as exc:
            raise ValueError(f"not a number: {exc}") from None
        if not form.name:
            raise ValueError("the job needs a name")
        return form

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "form-cancel":
            self.dismiss(None)
            return
        self.submit()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.submit()

    def submit(self) -> None:
        try:
            form = self.read_form()
        except ValueError as exc:
            self.query_one("#form-error", Static).update(str(exc))
            return
        self.dismiss(replace(form, typed=self.typed_values()))

    def action_cancel(self) -> None:
        self.dismiss(None)
