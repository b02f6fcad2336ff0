"""Load-test scenario files (TOML): the fleet, the job stream, the stages and the objectives.

A scenario is a strict pydantic model: an unknown key, a wrong type, inf, nan or an
out-of-range value is a `ScenarioError` with one line per problem naming the file and the key.
Each stage kind is its own model, with its own keys and defaults, in one union on `kind`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, Field, model_validator

from fleetroom.files import STRICT, FileError, counted, in_order, key_in, ranged, read_data, shares, validated

SLO_KEYS: dict[str, str] = {
    "max_jobs_lost": "jobs lost",
    "min_jobs_completed_share": "share of submitted jobs completed",
    "max_p99_latency_ms": "end-to-end latency p99 (ms)",
    "max_max_latency_ms": "end-to-end latency max (ms)",
    "max_assignment_p95_ms": "assignment latency p95 (ms)",
    "max_assignment_p99_ms": "assignment latency p99 (ms)",
    "max_stack_rss_mib": "peak resident memory of the whole stack, summed over its processes (MiB)",
    "min_messages_per_s": "messages received per second",
    "min_wrong_results_caught": "wrong results caught by the dispatcher",
    "min_cars_seen": "cars seen online",
    "min_shards_completed": "shards completed",
    "max_observer_dropped": "messages the observer dropped (it fell behind)",
    "max_frames_missed": "gateway offer frames that never reached the observer (gaps in their seq)",
}
"""Objective keys: `max_*` must not be exceeded, `min_*` must be reached."""

HARDWARE = ("HW3", "HW4", "HW5", "HW6")
JOB_KINDS = ("inference", "training", "rendering")
MAX_STAGE_S = 86_400.0  # a stage's duration
MAX_PAUSE_S = 1e7  # an outage's down time, a drain's timeout
MAX_SEED = 2**31

Share = Annotated[float, ranged(0.0, 1.0)]


class ScenarioError(FileError):
    """A scenario file that cannot be used; one line per problem."""


class FleetSpec(BaseModel):
    """The emulated fleet: how many cars, in how many processes, of which hardware."""

    model_config = STRICT

    count: Annotated[int, counted(1, 2_000_000)] = 50
    processes: Annotated[int, counted(1, 64)] = 1
    hardware_mix: Annotated[dict[Annotated[str, key_in(HARDWARE)], Share], AfterValidator(shares(HARDWARE))] = Field(
        default_factory=lambda: {"HW4": 0.5, "HW5": 0.4, "HW6": 0.1})
    mode: Literal["per-car", "gateway"] = "gateway"
    telemetry_interval_s: Annotated[float, ranged(0.1, 86_400.0)] = 60.0
    faulty_share: Share = 0.0
    seed: Annotated[int, counted(0, MAX_SEED)] = 1


class JobSpec(BaseModel):
    """The job stream: how often, of which kinds, how large."""

    model_config = STRICT

    rate_per_s: Annotated[float, ranged(0.0, 1000.0)] = 0.5
    mix: Annotated[dict[Annotated[str, key_in(JOB_KINDS)], Share], AfterValidator(shares(JOB_KINDS))] = Field(
        default_factory=lambda: {"inference": 0.5, "training": 0.3, "rendering": 0.2})
    scale: Annotated[float, ranged(1e-6, 1e6)] = 1.0
    seed: Annotated[int, counted(0, MAX_SEED)] = 7
    start_s: Annotated[float, ranged(0.0, MAX_STAGE_S)] = 0.0  # wall seconds into the first stage before the first job


class _Stage(BaseModel):
    """What every stage has: a label (its kind in words unless given) and its place in the plan."""

    model_config = STRICT

    label: str = ""

    @model_validator(mode="before")
    @classmethod
    def _label_from_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "label" not in data and isinstance(data.get("kind"), str):
            return {**data, "label": data["kind"].replace("_", " ")}
        return data

    @property
    def held_s(self) -> float:
        """Wall seconds the plan gives the stage before the next one starts (a drain: none)."""
        return 0.0

    @property
    def planned_s(self) -> float:
        """Wall seconds the stage takes at most, counting a drain at its timeout."""
        return self.held_s


class _Timed(_Stage):
    duration_s: Annotated[float, ranged(0.0, MAX_STAGE_S)] = 0.0

    @property
    def held_s(self) -> float:
        return self.duration_s


class ConnectRamp(_Timed):
    """Start the fleet; with `grow_to`, grow it to that many cars over the stage."""

    kind: Literal["connect_ramp"] = "connect_ramp"
    grow_to: Annotated[int, counted(0, 10_000_000)] = 0


class Steady(_Timed):
    """Run as is."""

    kind: Literal["steady"] = "steady"


class ReconnectStorm(_Timed):
    """Kill and restart every fleet process: every car reconnects at once."""

    kind: Literal["reconnect_storm"] = "reconnect_storm"


class MassDeparture(_Timed):
    """A share of the online cars drive away, at the scenario's departure hour."""

    kind: Literal["mass_departure"] = "mass_departure"
    share: Share = 0.5


class _Outage(_Timed):
    down_s: Annotated[float, ranged(0.0, MAX_PAUSE_S)] = 1.0

    @property
    def held_s(self) -> float:
        return self.duration_s + self.down_s


class BrokerRestart(_Outage):
    """Stop the broker for `down_s`, then start it again on the same port."""

    kind: Literal["broker_restart"] = "broker_restart"


class DispatcherKill(_Outage):
    """SIGKILL the dispatcher for `down_s`, then restart it on the same ledger."""

    kind: Literal["dispatcher_kill"] = "dispatcher_kill"


class FaultyCars(_Timed):
    """Add `count` cars, `faulty_share` of them returning wrong results or vanishing mid-shard."""

    kind: Literal["faulty_cars"] = "faulty_cars"
    count: Annotated[int, counted(1, 10_000_000)] = 10
    faulty_share: Share = 1.0


class Drain(_Stage):
    """Stop submitting; wait up to `timeout_s` for every job to end."""

    kind: Literal["drain"] = "drain"
    timeout_s: Annotated[float, ranged(0.0, MAX_PAUSE_S)] = 60.0

    @property
    def planned_s(self) -> float:
        return self.timeout_s


Stage = Annotated[
    ConnectRamp | Steady | ReconnectStorm | MassDeparture | BrokerRestart | DispatcherKill | FaultyCars | Drain,
    Field(discriminator="kind"),
]
STAGE_KINDS: tuple[str, ...] = tuple(get_args(member.model_fields["kind"].annotation)[0]
                                     for member in get_args(get_args(Stage)[0]))
"""Every stage kind, in the order of the union."""


def _not_empty(stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
    if not stages:
        raise ValueError("needs at least one [[stages]] table")
    return stages


class Scenario(BaseModel):
    """One load test: where it runs, the fleet, the jobs, the stages in order and the objectives."""

    model_config = STRICT

    name: str
    description: str = ""
    speed: Annotated[float, ranged(0.01, 100_000.0)] = 60.0
    broker: Literal["embedded", "mosquitto"] = "embedded"
    policy: Literal["fastest", "cheapest", "departure_aware", "energy_aware"] = "departure_aware"
    departure_hour: Annotated[int, counted(0, 23)] = 17
    heartbeat_timeout_s: Annotated[float, ranged(1.0, 3600.0)] = 30.0
    telemetry_sample: Annotated[int, counted(0, 2_000_000)] = 0
    fleet: FleetSpec = Field(default_factory=FleetSpec)
    jobs: JobSpec = Field(default_factory=JobSpec)
    stages: Annotated[tuple[Stage, ...], AfterValidator(_not_empty), Field(validate_default=True)] = ()
    slo: Annotated[dict[Annotated[str, key_in(SLO_KEYS)], Annotated[float, ranged(0.0, 1e12)]],
                   AfterValidator(in_order(SLO_KEYS))] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ramps_grow_the_fleet(self) -> Scenario:
        for stage in self.stages:
            if isinstance(stage, ConnectRamp) and 0 < stage.grow_to < self.fleet.count:
                raise ValueError(f"a connect_ramp's grow_to ({stage.grow_to}) is below fleet.count "
                                 f"({self.fleet.count}): the fleet can only grow")
        return self

    @property
    def planned_s(self) -> float:
        """Wall seconds the stages take, counting a drain at its timeout."""
        return sum(stage.planned_s for stage in self.stages)


def parse_scenario(data: dict[str, Any], where: str) -> Scenario:
    """A `Scenario` from parsed TOML (named after the file unless it says), or a `ScenarioError`."""
    try:
        return validated(Scenario, {"name": Path(where).stem, **data}, where, tags=STAGE_KINDS)
    except FileError as exc:
        raise ScenarioError(exc.problems) from None


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; every problem is a line of a `ScenarioError`."""
    try:
        return parse_scenario(read_data(path, "scenario", toml=True), str(path))
    except FileError as exc:
        raise ScenarioError(exc.problems) from None
