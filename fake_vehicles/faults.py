"""Fleet-telemetry's known faults, injected on purpose so the control plane can be tested against them.

Tesla's fleet-telemetry documents (and its users report) duplicate and missing connectivity
events, dropped signals, and vehicles that stop sending until they are restarted.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

FAULT_NAMES = {
    "duplicate-connectivity": "duplicate_connectivity",
    "missing-connectivity": "missing_connectivity",
    "dropped-signals": "dropped_signals",
    "silent": "silent_per_day",
}


class FaultSpecError(ValueError):
    """An `--inject-faults` value that cannot be used."""


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Probabilities of each injected fault."""

    duplicate_connectivity: float = 0.0  # a status message is sent twice
    missing_connectivity: float = 0.0  # a status message is not sent at all
    dropped_signals: float = 0.0  # a telemetry message is lost
    silent_per_day: float = 0.0  # chance per car and simulated day of going silent until restarted

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) > 0 for f in fields(self))


def parse_faults(specs: list[str]) -> FaultConfig:
    """Parse `name=probability` items (comma-separated or repeated); bare names mean 0.01."""
    values: dict[str, float] = {}
    for spec in specs:
        for item in spec.split(","):
            name, sep, value = item.strip().partition("=")
            if not name:
                continue
            field = FAULT_NAMES.get(name)
            if field is None:
                known = ", ".join(FAULT_NAMES)
                raise FaultSpecError(f"unknown fault {name!r} in --inject-faults (known: {known})")
            try:
                probability = float(value) if sep else 0.01
            except ValueError:
                raise FaultSpecError(f"bad probability {value!r} for fault {name!r}") from None
            if not 0.0 <= probability <= 1.0:
                raise FaultSpecError(f"probability for fault {name!r} must be within 0..1")
            values[field] = probability
    return FaultConfig(**values)
