"""How the demo runs: which broker it starts, and how the essay's million cars are emulated.

On Mosquitto the essay demo emulates every one of its 1,000,000 cars (gateway mode: a few
connections, statuses and offers in frames) over `ESSAY_FLEET_PROCESSES` fleet processes,
and the dispatcher counts them one for one, so nothing is labelled as scaled. On the embedded
amqtt broker, which takes about 5,000 messages a second, it emulates `ESSAY_EMULATED` cars
each standing for 500, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetroom.compose.summary import ESSAY_CARS, ESSAY_EMULATED

EMBEDDED, MOSQUITTO_KIND = "embedded", "mosquitto"
BROKER_KINDS = (EMBEDDED, MOSQUITTO_KIND)
ESSAY_FLEET_PROCESSES = 2  # fleet processes for a real million: the fastest join measured on 2 cores (docs/SCALE.md)
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


def fleet_processes(flag: int | None, cars: int) -> int:
    """Fleet processes: `--fleet-processes`, else `ESSAY_FLEET_PROCESSES` for a real million, else one."""
    if flag is not None:
        return flag
    return ESSAY_FLEET_PROCESSES if cars >= ESSAY_CARS else 1


def shard_flags(index: int, processes: int) -> list[str]:
    """`--shard i/n` for fleet process `index` of `processes`; none for a single process."""
    return ["--shard", f"{index}/{processes}"] if processes > 1 else []
