"""Fleet-wide messages: the dispatcher's summary and the operator's commands."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from protocol.base import Identifier, Message, NonNegative, Text


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
    # faults: what the dispatcher detected of injected (or real) faults since it started, by kind,
    # e.g. {"shards_lost_car_silent": 3, "cars_timed_out": 2}; wrong results are `wrong_results_caught`
    faults_detected: dict[str, int] = Field(default_factory=dict)


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
