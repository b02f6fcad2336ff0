"""Load-test scenario files (TOML): the fleet, the job stream, the stages and the objectives.

Parsing is strict: an unknown key, a wrong type or an out-of-range value is a `ScenarioError`
whose message names the file and the key, printed as one line by the command.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGE_KINDS: dict[str, frozenset[str]] = {
    "connect_ramp": frozenset({"duration_s", "grow_to"}),
    "steady": frozenset({"duration_s"}),
    "reconnect_storm": frozenset({"duration_s"}),
    "mass_departure": frozenset({"duration_s", "share"}),
    "broker_restart": frozenset({"duration_s", "down_s"}),
    "dispatcher_kill": frozenset({"duration_s", "down_s"}),
    "faulty_cars": frozenset({"duration_s", "count", "faulty_share"}),
    "drain": frozenset({"timeout_s"}),
}
"""Every stage kind and the keys it accepts (besides `kind` and `label`)."""

SLO_KEYS: dict[str, str] = {
    "max_jobs_lost": "jobs lost",
    "min_jobs_completed_share": "share of submitted jobs completed",
    "max_p99_latency_ms": "end-to-end latency p99 (ms)",
    "max_max_latency_ms": "end-to-end latency max (ms)",
    "max_assignment_p95_ms": "assignment latency p95 (ms)",
    "min_messages_per_s": "messages received per second",
    "min_wrong_results_caught": "wrong results caught by the dispatcher",
    "min_cars_seen": "cars seen online",
    "min_shards_completed": "shards completed",
    "max_observer_dropped": "messages the observer dropped (it fell behind)",
}
"""Objective keys: `max_*` must not be exceeded, `min_*` must be reached."""

HARDWARE = ("HW3", "HW4", "HW5", "HW6")
JOB_KINDS = ("inference", "training", "rendering")
BROKERS = ("embedded", "mosquitto")
POLICIES = ("fastest", "cheapest", "departure_aware", "energy_aware")
MODES = ("per-car", "gateway")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class FleetSpec:
    count: int = 50
    processes: int = 1
    hardware_mix: dict[str, float] = field(default_factory=lambda: {"HW4": 0.5, "HW5": 0.4, "HW6": 0.1})
    mode: str = "gateway"
    telemetry_interval_s: float = 60.0
    faulty_share: float = 0.0
    seed: int = 1


@dataclass(frozen=True)
class JobSpec:
    rate_per_s: float = 0.5
    mix: dict[str, float] = field(default_factory=lambda: {"inference": 0.5, "training": 0.3, "rendering": 0.2})
    scale: float = 1.0
    seed: int = 7


@dataclass(frozen=True)
class Stage:
    kind: str
    label: str
    duration_s: float = 0.0
    params: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    speed: float
    broker: str
    policy: str
    departure_hour: int
    heartbeat_timeout_s: float
    telemetry_sample: int
    fleet: FleetSpec
    jobs: JobSpec
    stages: tuple[Stage, ...]
    slo: dict[str, float]

    @property
    def planned_s(self) -> float:
        """Wall seconds the stages take, counting a drain at its timeout."""
        return sum(s.duration_s + s.params.get("down_s", 0.0) + s.params.get("timeout_s", 0.0) for s in self.stages)


class _Table:
    """A TOML table read key by key with checked types; leftovers are unknown keys."""

    def __init__(self, data: object, where: str, *, sep: str = ".") -> None:
        if not isinstance(data, dict):
            raise ScenarioError(f"{where}: expected a table")
        self.data: dict[str, Any] = dict(data)
        self.where, self.sep = where, sep  # the file's own keys read "FILE: key", a table's "FILE: table.key"

    def _at(self, key: str) -> str:
        return f"{self.where}{self.sep}{key}"

    def _take(self, key: str, default: Any, kinds: tuple[type, ...], what: str) -> Any:
        value = self.data.pop(key, default)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ScenarioError(f"{self._at(key)}: expected {what}, got {value!r}")
        return value

    def number(self, key: str, default: float, lo: float = 0.0, hi: float = float("inf")) -> float:
        value = float(self._take(key, default, (int, float), "a number"))
        if not lo <= value <= hi:
            raise ScenarioError(f"{self._at(key)}: {value:g} is outside {lo:g}..{hi:g}")
        return value

    def integer(self, key: str, default: int, lo: int = 0, hi: int = 10_000_000) -> int:
        value = int(self._take(key, default, (int,), "an integer"))
        if not lo <= value <= hi:
            raise ScenarioError(f"{self._at(key)}: {value} is outside {lo}..{hi}")
        return value

    def text(self, key: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value = str(self._take(key, default, (str,), "a string"))
        if choices and value not in choices:
            raise ScenarioError(f"{self._at(key)}: {value!r} is not one of {', '.join(choices)}")
        return value

    def shares(self, key: str, default: dict[str, float], names: tuple[str, ...]) -> dict[str, float]:
        raw = self.data.pop(key, default)
        table = _Table(raw, self._at(key))
        result = {name: table.number(name, 0.0, 0.0, 1.0) for name in names if name in table.data}
        table.done()
        if not result or abs(sum(result.values()) - 1.0) > 1e-6:
            raise ScenarioError(f"{self._at(key)}: shares must sum to 1 (got {sum(result.values()):g})")
        return result

    def done(self) -> None:
        if self.data:
            raise ScenarioError(f"{self.where}: unknown key {sorted(self.data)[0]!r}")


def _fleet(table: _Table) -> FleetSpec:
    spec = FleetSpec(
        count=table.integer("count", 50, 1, 2_000_000),
        processes=table.integer("processes", 1, 1, 64),
        hardware_mix=table.shares("hardware_mix", FleetSpec().hardware_mix, HARDWARE),
        mode=table.text("mode", "gateway", MODES),
        telemetry_interval_s=table.number("telemetry_interval_s", 60.0, 0.1, 86_400.0),
        faulty_share=table.number("faulty_share", 0.0, 0.0, 1.0),
        seed=table.integer("seed", 1, 0, 2**31),
    )
    table.done()
    return spec


def _jobs(table: _Table) -> JobSpec:
    spec = JobSpec(
        rate_per_s=table.number("rate_per_s", 0.5, 0.0, 1000.0),
        mix=table.shares("mix", JobSpec().mix, JOB_KINDS),
        scale=table.number("scale", 1.0, 1e-6, 1e6),
        seed=table.integer("seed", 7, 0, 2**31),
    )
    table.done()
    return spec


def _stage(raw: object, index: int) -> Stage:
    table = _Table(raw, f"stages[{index}]")
    kind = table.text("kind", "", tuple(STAGE_KINDS))
    label = table.text("label", kind.replace("_", " "))
    params: dict[str, float] = {}
    for key in sorted(STAGE_KINDS[kind] - {"duration_s"}):
        if key in table.data:
            hi = 1.0 if key in ("share", "faulty_share") else 1e7
            params[key] = table.number(key, 0.0, 0.0, hi)
    duration = table.number("duration_s", 0.0, 0.0, 86_400.0) if "duration_s" in STAGE_KINDS[kind] else 0.0
    table.done()
    if kind == "drain" and "timeout_s" not in params:
        params["timeout_s"] = 60.0
    return Stage(kind, label, duration, params)


def parse_scenario(data: dict[str, Any], where: str) -> Scenario:
    """Build a `Scenario` from parsed TOML, or raise `ScenarioError` naming `where` and the key."""
    top = _Table(data, where, sep=": ")
    name = top.text("name", Path(where).stem)
    description = top.text("description", "")
    speed = top.number("speed", 60.0, 0.01, 100_000.0)
    broker = top.text("broker", "embedded", BROKERS)
    policy = top.text("policy", "departure_aware", POLICIES)
    departure_hour = top.integer("departure_hour", 17, 0, 23)
    heartbeat_timeout_s = top.number("heartbeat_timeout_s", 30.0, 1.0, 3600.0)
    telemetry_sample = top.integer("telemetry_sample", 0, 0, 2_000_000)
    fleet = _fleet(_Table(top.data.pop("fleet", {}), f"{where}: fleet"))
    jobs = _jobs(_Table(top.data.pop("jobs", {}), f"{where}: jobs"))
    raw_stages = top.data.pop("stages", None)
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ScenarioError(f"{where}: needs at least one [[stages]] table")
    try:
        stages = tuple(_stage(raw, i) for i, raw in enumerate(raw_stages))
    except ScenarioError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    slo_table = _Table(top.data.pop("slo", {}), f"{where}: slo")
    slo = {key: slo_table.number(key, 0.0, 0.0, 1e12) for key in SLO_KEYS if key in slo_table.data}
    slo_table.done()
    top.done()
    return Scenario(name, description, speed, broker, policy, departure_hour, heartbeat_timeout_s, telemetry_sample,
                    fleet, jobs, stages, slo)


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; every problem is a one-line `ScenarioError`."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return parse_scenario(data, str(path))
