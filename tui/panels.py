"""The text of the header, the health bar and the hardware breakdown, built from the store. Pure.

The header's totals come from the dispatcher's retained FleetSummary, never from adding up
raw telemetry, so the control room and the dispatcher cannot disagree about the fleet's size.
"""

from __future__ import annotations

from protocol.reference import INT8_VS_FP64_NOTE, REFERENCE_MACHINES, equivalences, format_tops
from protocol.vocabulary import CarState
from tui.store import FleetStore

CAR_STATES = (CarState.ONLINE, *(state for state in CarState if state is not CarState.ONLINE))  # online: all reachable


def plural(count: int, name: str) -> str:
    """`11,363 Fugakus`, `1 Frontier`, `1,820 El Capitans`."""
    return f"{count:,} {name}" + ("" if count == 1 else "s")


def totals_line(store: FleetStore) -> str:
    """TOPS total / offered / allocated, or a note that the dispatcher has not spoken yet."""
    s = store.summary
    if s is None:
        return "waiting for the dispatcher's fleet summary…"
    return (f"TOTAL {format_tops(s.tops_total)}   offered {format_tops(s.tops_offered)}   "
            f"allocated {format_tops(s.tops_allocated)}   policy {s.policy.value}")


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
    """The total as whole Fugakus, Frontiers and El Capitans, as the essay computes."""
    if store.summary is None:
        return "as supercomputers: (with the dispatcher's first summary)"
    counts = equivalences(store.summary.tops_total)
    parts = [plural(counts[m.name], m.name) for m in REFERENCE_MACHINES]
    scale = store.summary.scenario_scale
    return "= " + " · ".join(parts) + " (peak)" + (f"   [{scale}]" if scale else "")


def note_line() -> str:
    return INT8_VS_FP64_NOTE


def health_line(store: FleetStore, broker: str, *, read_only: bool, paused: bool) -> str:
    """Broker, connection state, messages per second and rejected messages."""
    link = store.link
    state = link.state + (f" (attempt {link.attempt})" if link.state == "reconnecting" else "")
    if link.state == "failed":
        state += f" ({link.reason[:80]})"
    rejected = store.rejected_total
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(store.rejected.items()))
    parts = [f"{broker} {state}", f"{store.msgs_per_s:,.0f} msg/s", f"{store.messages:,} msgs"]
    parts.append(f"rejected {rejected:,}" + (f" ({reasons})" if reasons else ""))
    if store.dropped:
        parts.append(f"DROPPED {store.dropped:,} (fell behind)")
    peers = peers_text(store)
    if peers:
        parts.append(peers)
    if link.reconnects:
        parts.append(f"reconnected {link.reconnects}x")
    if read_only:
        parts.append("READ-ONLY")
    if paused:
        parts.append("UPDATES PAUSED")
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


def hardware_lines(store: FleetStore, width: int = 30) -> list[str]:
    """Cars and TOPS by hardware generation, with a bar of each one's share of TOPS."""
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


def latest(values: list[float] | tuple[float, ...]) -> float:
    return values[-1] if values else 0.0
