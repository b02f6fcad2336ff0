"""How the demo runs: which broker it starts, and how the essay's million cars are emulated.

On Mosquitto the essay demo emulates every one of its 1,000,000 cars (gateway mode: a few
connections, statuses and offers in frames) over `essay_fleet_processes()` fleet processes,
and the dispatcher counts them one for one, so nothing is labelled as scaled. On the embedded
amqtt broker, which takes about 5,000 messages a second, it emulates `ESSAY_EMULATED` cars
each standing for 500, and says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fleetroom.compose.summary import ESSAY_CARS, ESSAY_EMULATED

EMBEDDED, MOSQUITTO_KIND = "embedded", "mosquitto"
BROKER_KINDS = (EMBEDDED, MOSQUITTO_KIND)
TELEMETRY_BUDGET_PER_S = 10_000  # telemetry messages a wall second the essay's whole fleet may send
MIN_TELEMETRY_S = 600.0  # simulated seconds between a car's telemetry at most (the 2,000-car demo's figure)
MAX_ESSAY_JOB_RATE = 5.0  # jobs a wall second: ~200 shard assignments a second, what the dispatcher keeps up with


@dataclass(frozen=True)
class DemoBroker:
    """Where the demo's broker comes from: started here (`kind`), or named by URL (`kind` is "external")."""

    kind: str
    url_text: str | None = None


def choose_broker(flag: str | None, scenario: str, mosquitto_installed: bool) -> DemoBroker:
    """`--broker` as given (a URL, `mosquitto` or `embedded`), or the default for the scenario.

    The essay runs on Mosquitto when it is installed; the growing demo on the embedded broker."""
    if flag in BROKER_KINDS:
        return DemoBroker(flag)
    if flag:
        return DemoBroker("external", flag)
    return DemoBroker(MOSQUITTO_KIND if scenario == "essay" and mosquitto_installed else EMBEDDED)


def essay_emulated(flag: int | None, broker_kind: str) -> int:
    """Cars the essay demo really emulates: `--emulate`, else all of them on Mosquitto, else 2,000."""
    if flag is not None:
        return flag
    return ESSAY_CARS if broker_kind == MOSQUITTO_KIND else ESSAY_EMULATED


def essay_telemetry_s(cars: int, speed: float) -> float:
    """Simulated seconds between a car's telemetry that keep the fleet within `TELEMETRY_BUDGET_PER_S`."""
    return max(MIN_TELEMETRY_S, round(speed * cars / TELEMETRY_BUDGET_PER_S))


def essay_fleet_processes(cores: int | None = None) -> int:
    """Fleet processes for a real million: half the cores this process may run on, at least one.

    The other half is the dispatcher's (its loop and its ledger writer) and the broker's. On two
    cores, two fleet processes join a million alone fastest (12.9 s against 24.1 s for one), but
    beside the dispatcher they starve it: it knew the million after 41.9 s with two, 23.2 s with
    one (`bench/essay_scale.py`, docs/SCALE.md).
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


def fleet_processes(flag: int | None, cars: int) -> int:
    """Fleet processes: `--fleet-processes`, else `essay_fleet_processes()` for a real million, else one."""
    if flag is not None:
        return flag
    return essay_fleet_processes() if cars >= ESSAY_CARS else 1


def shard_flags(index: int, processes: int) -> list[str]:
    """`--shard i/n` for fleet process `index` of `processes`; none for a single process."""
    return ["--shard", f"{index}/{processes}"] if processes > 1 else []
