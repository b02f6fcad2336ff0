"""The text of the drill-down screens: one car, one job. Pure."""

from __future__ import annotations

from protocol.reference import format_tops
from tui.earnings import car_money_lines
from tui.jobs import JobRow
from tui.store import CarRow, FleetStore


def bar(fraction: float, width: int = 20) -> str:
    """A text progress bar: `█████░░░░░  50%`."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled) + f" {fraction:4.0%}"


def why_offering(car: CarRow) -> str:
    """One sentence on why this car is, or is not, offering compute."""
    if car.liveness != "online":
        return f"not offering: the car is {car.liveness}" + (f" ({car.reason})" if car.reason != car.liveness else "")
    if car.code == "Dr":
        return "not offering: the car is being driven"
    if car.code == "Su":
        return f"not offering: suspended ({car.reason or 'no reason given'})"
    if car.code == "Va":
        return "not offering: the owner is returning; checkpointing before driving away"
    if car.code == "Bu":
        return f"busy with {car.shard or 'a shard'}" + (f"; still offers {car.offered_tops:,.0f} TOPS"
                                                        if car.offered_tops else "")
    if car.offered_tops:
        return f"offering {car.offered_tops:,.0f} TOPS"
    return "idle, no offer heard yet"


def reliability_text(score: float | None) -> str:
    """The ledger's reliability score of a car, or why it is not known yet."""
    if score is None:
        return "- (the dispatcher's score arrives with the car's next assignment)"
    return f"{score:.0%} (the dispatcher ledger's score: valid results weighed against wrong ones)"


def car_lines(store: FleetStore, vehicle_id: str) -> list[str]:
    """Everything the control room knows about one car."""
    car = store.cars.get(vehicle_id)
    if car is None:
        return [f"{vehicle_id}: not heard from (yet)"]
    departure = car.expected_departure.strftime("%Y-%m-%d %H:%M") if car.expected_departure else "-"
    confidence = f" (confidence {car.departure_confidence:.0%})" if car.departure_confidence is not None else ""
    price = f"{car.price_per_tops_hour:.6f} per TOPS-hour" if car.price_per_tops_hour is not None else "-"
    lines = [
        f"{car.vehicle_id}   state {car.code} ({car.liveness})   hardware {car.hardware or '?'}"
        + (f"   via {car.gateway}" if car.gateway else ""),
        f"why: {why_offering(car)}",
        f"rated {format_tops(car.rated_tops)}   in use {format_tops(car.tops_in_use)}   "
        f"free {format_tops(car.free_tops)}",
        f"state of charge {f'{car.soc:.0%}' if car.soc is not None else '-'}   expected departure {departure}"
        f"{confidence}   price {price}",
        f"shard {car.shard or '-'}   job {car.job_id or '-'}   done {car.done_tera_ops:,.0f} of "
        f"{car.work_tera_ops:,.0f} tera-ops   last checkpoint {car.checkpoint_tera_ops:,.0f}",
        f"last event: {car.last_event or '-'}",
        *car_money_lines(store.earnings, vehicle_id),
        f"reliability {reliability_text(car.reliability)}",
    ]
    points = store.car_history.get(vehicle_id)
    if points:
        lines.append(f"telemetry history: {len(points)} samples, latest at {points[-1].sim_time:%H:%M:%S} (sim)")
    return lines


def job_lines(job: JobRow, max_shards: int = 200) -> list[str]:
    """A job's status, progress, cost, validation, why it waits, and its shards with cars."""
    state = job.state
    lines = [f"{job.job_id}  {job.name or ''}   status {job.status}" + (f" ({state.reason})" if state and
                                                                             state.reason else "")]
    if state is not None:
        lines += [
            f"progress {bar(state.progress, 30)}   shards done {state.shards_done}/{state.shards_total}, "
            f"running {state.shards_running}",
            f"preemptions {state.preemptions}   redone {state.redone_tera_ops:,.0f} tera-ops   "
            f"wrong results caught {state.wrong_results}   cost {state.cost:,.4f}",
        ]
        lines += [f"waits: {w.cars_failing:,} cars fail {w.requirement}" for w in state.wait_reasons]
    if job.submission is not None:
        sub = job.submission
        lines.append(f"submitted: {sub.total_work_tera_ops:,.0f} tera-ops in {sub.shards} shards, "
                     f"min {sub.min_tops_per_car:,.0f} TOPS per car, priority {sub.priority}, "
                     f"redundancy {sub.redundancy}")
    lines.append(f"shards seen on the wire: {len(job.shards)}")
    for shard in list(job.shards.values())[:max_shards]:
        note = f" ({shard.note})" if shard.note else ""
        lines.append(f"  {shard.shard_id:<18} {shard.vehicle_id:<18} {bar(shard.progress)} {shard.status}{note}")
    return lines
