"""Scripted cars and a scripted dispatcher for the control room's tests: real protocol messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from protocol import (
    ChargeState,
    ComputeOffer,
    ComputeState,
    ConnectionStatus,
    FleetSummary,
    Gear,
    HardwareGeneration,
    JobState,
    JobStatus,
    Liveness,
    Location,
    MatchPolicy,
    OfferWithdrawal,
    OwnerMode,
    ShardAssignment,
    ShardProgress,
    ShardResult,
    SuspendReason,
    VehicleStatus,
    VehicleTelemetry,
    WaitReason,
    encode,
)
from protocol.frames import ROSTER_BLOCK, CarRoster, OfferFrame, RosterEntry, roster_blocks
from protocol.topics import Topics
from protocol.vehicle_messages import HARDWARE_TOPS

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
RATED: dict[str, float] = {str(gen): tops for gen, tops in HARDWARE_TOPS.items()}  # the catalogue's own figures


def _env(sender: str, minutes: float = 0.0) -> dict[str, object]:
    at = T0 + timedelta(minutes=minutes)
    return {"sender": sender, "sent_at": at, "sim_time": at}


def status(vid: str, state: Liveness = Liveness.ONLINE, hardware: str = "HW5") -> VehicleStatus:
    return VehicleStatus(**_env(vid), state=state, hardware=HardwareGeneration(hardware))


def telemetry(vid: str, compute: ComputeState = ComputeState.IDLE, *, hardware: str = "HW5", soc: float = 0.8,
              in_use: float = 0.0, shard: str | None = None, earned: float = 0.0,
              reason: SuspendReason | None = None, gear: Gear = Gear.PARK, minutes: float = 0.0) -> VehicleTelemetry:
    return VehicleTelemetry(
        **_env(vid, minutes), soc=soc, charge_state=ChargeState.COMPLETE, gear=gear,
        location=Location(latitude=35.7, longitude=139.8), vehicle_speed_kmh=0.0 if gear is Gear.PARK else 40.0,
        pack_temp_c=25.0, inside_temp_c=20.0, locked=True, driver_seat_occupied=False,
        software_update_in_progress=False, battery_kwh=75.0, hardware=HardwareGeneration(hardware),
        rated_tops=RATED[hardware], tops_in_use=in_use, compute_power_kw=0.3, owner_mode=OwnerMode.COMPUTE,
        compute_state=compute, suspend_reason=reason, shard=shard, earned=earned,
    )


def offer(vid: str, free: float = 5_000.0) -> ComputeOffer:
    return ComputeOffer(**_env(vid), offer_id=f"off-{vid}", hardware=HardwareGeneration.HW5, free_tops=free,
                        energy_budget_kwh=10.0, expected_departure=T0 + timedelta(hours=8),
                        departure_confidence=0.9, price_per_tops_hour=0.0004, soc=0.8)


def summary(cars: int, hardware: str = "HW5", *, busy: int = 0, running: int = 0, queued: int = 0,
            scale: str = "") -> FleetSummary:
    """The dispatcher's summary for `cars` cars of one generation, all online."""
    tops = cars * RATED[hardware]
    return FleetSummary(
        **_env("dispatcher"), cars_known=cars, cars_by_state={"online": cars, "idle": cars - busy, "busy": busy},
        cars_by_hardware={hardware: cars}, tops_total=tops, tops_offered=tops * 0.5, tops_allocated=tops * 0.25,
        tops_by_hardware={hardware: tops}, jobs_by_status={"running": running, "queued": queued, "done": 7},
        shards_completed=40, work_done_tera_ops=1e9, throughput_tops=2e5, preemptions=2, redone_tera_ops=1e4,
        wrong_results_caught=1, earnings_gross=123.45, energy_kwh=50.0, energy_cost=6.0, messages_per_s=250.0,
        messages_rejected=0, policy=MatchPolicy.FASTEST, scenario_scale=scale,
    )


def job_state(job_id: str, status: JobStatus = JobStatus.RUNNING, progress: float = 0.5) -> JobState:
    waits = (WaitReason(requirement="free_tops >= 8000", cars_failing=3),) if status is JobStatus.QUEUED else ()
    return JobState(**_env("dispatcher"), job_id=job_id, name=f"{job_id} batch", status=status,
                    shards_total=4, shards_done=2, shards_running=1, progress=progress, preemptions=1,
                    cost=0.5, wait_reasons=waits)


def assignment(vid: str, job_id: str, shard: int = 0) -> ShardAssignment:
    return ShardAssignment(**_env("dispatcher"), assignment_id=f"asg-{job_id}-{shard}", vehicle_id=vid,
                           job_id=job_id, shard_id=f"{job_id}.s{shard}", work_tera_ops=1e6,
                           input_digest="ab" * 16, allocated_tops=2_500.0, checkpoint_interval_s=60.0,
                           price_per_tops_hour=0.0004)


def progress(vid: str, job_id: str, shard: int = 0, done: float = 4e5) -> ShardProgress:
    return ShardProgress(**_env(vid), assignment_id=f"asg-{job_id}-{shard}", job_id=job_id,
                         shard_id=f"{job_id}.s{shard}", done_tera_ops=done, checkpoint_tera_ops=done)


def result(vid: str, job_id: str, shard: int = 0, work: float = 1e6) -> ShardResult:
    return ShardResult(**_env(vid), assignment_id=f"asg-{job_id}-{shard}", job_id=job_id,
                       shard_id=f"{job_id}.s{shard}", result_digest="cd" * 32, work_tera_ops=work,
                       energy_kwh=0.5, elapsed_s=400.0)


def dispatcher_status(state: Liveness = Liveness.ONLINE) -> ConnectionStatus:
    return ConnectionStatus(**_env("dispatcher"), role="dispatcher", state=state)


def roster(gateway: str, block: int, cars: Sequence[str | tuple[str, Liveness, str]],
           hardware: str = "HW5") -> CarRoster:
    """One roster of a gateway: each car online, or (id, state, reason)."""
    gen = HardwareGeneration(hardware)
    entries = [RosterEntry(vehicle_id=car, state=Liveness.ONLINE, hardware=gen, reason="joined") if isinstance(car, str)
               else RosterEntry(vehicle_id=car[0], state=car[1], hardware=gen, reason=car[2]) for car in cars]
    return CarRoster(**_env(gateway), block=block, cars=entries)


def offer_frame(gateway: str, seq: int, items: Sequence[ComputeOffer | OfferWithdrawal]) -> OfferFrame:
    return OfferFrame(**_env(gateway), seq=seq, offers=list(items))


def gateway_status(gateway: str, state: Liveness = Liveness.ONLINE) -> ConnectionStatus:
    return ConnectionStatus(**_env(gateway), role="gateway", state=state, frames=True)


def roster_feed(topics: Topics, cars: int, gateway: str = "gw-0") -> list[tuple[str, bytes]]:
    """(topic, payload) of the rosters of `cars` cars named car-0000000..., ROSTER_BLOCK a block."""
    feed = []
    for block in range(roster_blocks(cars)):
        ids = [f"car-{i:07d}" for i in range(block * ROSTER_BLOCK, min((block + 1) * ROSTER_BLOCK, cars))]
        feed.append((topics.roster(gateway, block), encode(roster(gateway, block, ids))))
    return feed
