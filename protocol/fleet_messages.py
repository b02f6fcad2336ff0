"""Fleet-wide messages: the dispatcher's summary and the operator's commands."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from protocol.base import Fraction, Identifier, Message, NonNegative, Text


class MatchPolicy(StrEnum):
    """How the dispatcher ranks offers for a job, selectable at run time."""

    FASTEST = "fastest"
    CHEAPEST = "cheapest"
    DEPARTURE_AWARE = "departure_aware"
    ENERGY_AWARE = "energy_aware"


class FleetSummary(Message):
    """Aggregates the dispatcher publishes once a second (retained) for the control room."""

    kind: Literal["fleet_summary"] = "fleet_summary"
    cars_known: int = Field(ge=0)
    cars_by_state: dict[str, int]  # keyed by `CarState` value; "online" counts every reachable car
    cars_by_hardware: dict[str, int]
    tops_total: NonNegative  # rated TOPS of cars online
    tops_offered: NonNegative
    tops_allocated: NonNegative
    tops_by_hardware: dict[str, float]
    jobs_by_status: dict[str, int]
    shards_completed: int = Field(ge=0)
    work_done_tera_ops: NonNegative
    throughput_tops: NonNegative  # tera-ops completed per simulation second, recent window
    preemptions: int = Field(ge=0)
    redone_tera_ops: NonNegative
    wrong_results_caught: int = Field(ge=0)
    earnings_gross: NonNegative
    energy_kwh: NonNegative
    energy_cost: NonNegative
    currency: str = "USD"
    messages_per_s: NonNegative
    messages_rejected: int = Field(ge=0)
    rejections: dict[str, int] = Field(default_factory=dict)  # messages_rejected by reason, e.g. result_too_fast
    policy: MatchPolicy
    scenario_scale: Text = ""  # e.g. "essay: 1,000,000 HW5 cars", empty for a live fleet
    # power and hours: power and energy are the cars' telemetry (scaled like TOPS), rated power and
    # the parked shares by hour are the model's (protocol.power, protocol.hours)
    compute_power_kw: NonNegative = 0.0  # drawn by computing cars now
    compute_power_from_grid_kw: NonNegative = 0.0  # the part drawn by cars on a charger; the rest is from batteries
    rated_power_kw: NonNegative = 0.0  # every online car computing at full load (model)
    energy_from_battery_kwh: NonNegative = 0.0  # compute energy since the dispatcher started, from batteries
    energy_from_grid_kwh: NonNegative = 0.0  # ... and from the grid (cars on a charger)
    parked_share: Fraction | None = None  # of online cars, parked now; None with no car online
    parked_share_week_model: Fraction | None = None  # the owner-day model's share parked over a week
    parked_share_by_weekday_model: tuple[Fraction, ...] = ()  # the same, day by day, Monday first
    tops_forecast_24h: tuple[NonNegative, ...] = ()  # rated TOPS of parked cars by local hour, this hour first (model)
    forecast_start_hour: int = Field(default=0, ge=0, le=23)  # the local hour tops_forecast_24h starts at
    # issue 14, metrics for Prometheus: what /metrics exports beside the fields above, from the same moment
    shards_running: int = Field(default=0, ge=0)  # distinct shards with an active assignment
    assignments_running: int = Field(default=0, ge=0)  # active assignments, replicas counted
    messages_received: int = Field(default=0, ge=0)  # MQTT messages handled since the process started
    ingest_backlog: int = Field(default=0, ge=0)  # messages waiting in the inbound queue
    # owners' money (the ledger's; earnings_gross above is compute only)
    robotaxi_gross: NonNegative = 0.0  # owners' share of robotaxi fares
    robotaxi_trips: int = Field(default=0, ge=0)
    earnings_net: float = Field(default=0.0, allow_inf_nan=False)  # compute + robotaxi - energy cost
    cars_by_owner_mode: dict[str, int] = Field(default_factory=dict)  # keyed by `OwnerMode` value
    # faults: what the dispatcher detected of injected (or real) faults since it started, by kind,
    # e.g. {"shards_lost_car_silent": 3, "cars_timed_out": 2}; wrong results are `wrong_results_caught`
    faults_detected: dict[str, int] = Field(default_factory=dict)


def utilisation(s: FleetSummary) -> float:
    """TOPS allocated over TOPS the parked cars put up (allocated plus still offered); 0 when none is."""
    put_up = s.tops_allocated + s.tops_offered
    return s.tops_allocated / put_up if put_up > 0 else 0.0


def money_text(s: FleetSummary) -> str:
    """The ledger's money as one line: gross (compute + robotaxi), energy cost and net, in the summary's currency."""
    gross = s.earnings_gross + s.robotaxi_gross
    return (f"gross {gross:,.2f} (compute {s.earnings_gross:,.2f} + robotaxi {s.robotaxi_gross:,.2f}), "
            f"energy cost {s.energy_cost:,.2f}, net {s.earnings_net:,.2f} {s.currency}")


class SetPolicy(Message):
    """Operator command: change the dispatcher's matchmaking policy."""

    kind: Literal["set_policy"] = "set_policy"
    policy: MatchPolicy


class CancelJob(Message):
    """Operator command: cancel a job; its running shards are withdrawn."""

    kind: Literal["cancel_job"] = "cancel_job"
    job_id: Identifier
    reason: Text = ""


class DriveAway(Message):
    """Operator command to a fleet process: this car's owner returns now."""

    kind: Literal["drive_away"] = "drive_away"
    vehicle_id: Identifier


class AddCars(Message):
    """Operator command to a fleet process that accepts it: add this many cars."""

    kind: Literal["add_cars"] = "add_cars"
    count: int = Field(ge=1, le=1_000_000)
    hardware_mix: dict[str, float] = Field(default_factory=dict)  # e.g. {"HW5": 0.7, "HW6": 0.3}
