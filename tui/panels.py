"""The text of the header, the health bar and the hardware breakdown, built from the store. Pure.

The header's totals come from the dispatcher's retained FleetSummary, never from adding up
raw telemetry, so the control room and the dispatcher cannot disagree about the fleet's size.
"""

from __future__ import annotations

from protocol.fleet_messages import utilisation
from protocol.reference import (
    FUGAKU,
    INT8_VS_FP64_NOTE,
    equivalence_text,
    format_machines,
    format_tops,
    machines_fraction,
)
from protocol.vocabulary import CarState
from tui.store import FleetStore

CAR_STATES = (CarState.ONLINE, *(state for state in CarState if state is not CarState.ONLINE))  # online: all reachable


def totals_line(store: FleetStore) -> str:
    """TOPS total / offered / allocated, or a note that the dispatcher has not spoken yet."""
    s = store.summary
    if s is None:
        return "waiting for the dispatcher's fleet summary…"
    in_use = f" ({utilisation(s):.0%} of what is put up)" if s.tops_allocated + s.tops_offered > 0 else ""
    return (f"TOTAL {format_tops(s.tops_total)}   in use {format_tops(s.tops_allocated)}{in_use}   "
            f"still offered {format_tops(s.tops_offered)}   policy {s.policy.value}")


def cars_line(store: FleetStore) -> str:
    """Cars known and by state, jobs running and queued (from the summary)."""
    s = store.summary
    if s is None:
        return f"cars seen {len(store.cars):,}"
    states = "  ".join(f"{name} {s.cars_by_state[name]:,}" for name in CAR_STATES if s.cars_by_state.get(name))
    jobs = s.jobs_by_status
    return (f"cars {s.cars_known:,}: {states or 'none online'}   |   jobs running {jobs.get('running', 0):,}"
            f"  queued {jobs.get('queued', 0):,}  done {jobs.get('done', 0):,}")


def equivalence_line(store: FleetStore) -> str:
    """The total and the part in use as Fugakus, Frontiers and El Capitans (peak), fractional when small."""
    s = store.summary
    if s is None:
        return "as supercomputers: (with the dispatcher's first summary)"
    scale = f"   [{s.scenario_scale}]" if s.scenario_scale else ""
    return (f"= {equivalence_text(s.tops_total, separator=' · ')} (peak)   in use: "
            f"{format_machines(machines_fraction(s.tops_allocated, FUGAKU), FUGAKU.name)}{scale}")


def faults_line(store: FleetStore) -> str:
    """What the dispatcher detected of the faults cars show (injected or real), from its summary."""
    s = store.summary
    if s is None:
        return "faults detected: (with the dispatcher's first summary)"
    detected = {"wrong results caught": s.wrong_results_caught, "preemptions": s.preemptions,
                **{kind.replace("_", " "): n for kind, n in sorted(s.faults_detected.items())}}
    return "faults detected: " + " · ".join(f"{kind} {n:,}" for kind, n in detected.items())


def note_line() -> str:
    return INT8_VS_FP64_NOTE


def health_line(store: FleetStore, broker: str, *, read_only: bool, paused: bool) -> str:
    """Mode flags first (READ-ONLY, paused, reconnects), then broker, link, rates, rejections, peers.

    The flags lead so that a narrow terminal cuts the least important part, never them."""
    link = store.link
    state = link.state + (f" (attempt {link.attempt})" if link.state == "reconnecting" else "")
    if link.state == "failed":
        state += f" ({link.reason[:80]})"
    flags = [flag for flag, on in (("READ-ONLY", read_only), ("UPDATES PAUSED", paused),
                                   (f"reconnected {link.reconnects}x", link.reconnects > 0)) if on]
    rejected = store.rejected_total
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(store.rejected.items()))
    parts = [*flags, f"{broker} {state}", f"{store.msgs_per_s:,.0f} msg/s", f"{store.messages:,} msgs"]
    parts.append(f"rejected {rejected:,}" + (f" ({reasons})" if reasons else ""))
    if store.dropped:
        parts.append(f"DROPPED {store.dropped:,} (fell behind)")
    peers = peers_text(store)
    if peers:
        parts.append(peers)
    return " · ".join(parts)


def peers_text(store: FleetStore) -> str:
    """The other processes' retained connection status: the dispatcher, fleet gateways."""
    by_role: dict[str, list[tuple[str, int]]] = {}
    for status in store.connections.values():
        if status.role in ("dispatcher", "gateway"):
            by_role.setdefault(status.role, []).append((status.state.value, status.vehicle_count))
    parts = []
    for role, entries in sorted(by_role.items()):
        online = [cars for state, cars in entries if state == "online"]
        cars = f", {sum(online):,} cars" if role == "gateway" else ""
        parts.append(f"{role} {len(online)}/{len(entries)} online{cars}")
    return " · ".join(parts)


HARDWARE_LABEL_WIDTH = 36  # "HW5   1,000,000 cars     5.0 GTOPS "


def hardware_lines(store: FleetStore, panel_width: int = 66) -> list[str]:
    """Cars and TOPS by hardware generation, with a bar of each one's share of TOPS that fits `panel_width`."""
    width = max(4, panel_width - HARDWARE_LABEL_WIDTH - 1)
    s = store.summary
    if s is not None and s.tops_by_hardware:
        cars, tops = s.cars_by_hardware, s.tops_by_hardware
    else:
        cars = dict(store.hardware_counts)
        tops = {}
    total = sum(tops.values()) or 1.0
    lines = []
    for hw in sorted(set(cars) | set(tops)):
        share = tops.get(hw, 0.0) / total
        bar = "█" * round(share * width)
        lines.append(f"{hw:<4} {cars.get(hw, 0):>10,} cars {format_tops(tops.get(hw, 0.0)):>14} {bar}")
    return lines or ["no cars yet"]

