"""One valid instance of every wire message, for codec tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from protocol import (
    AddCars,
    AnyMessage,
    CancelJob,
    ChargeState,
    ComputeOffer,
    ComputeState,
    ConnectionStatus,
    DriveAway,
    FleetSummary,
    Gear,
    HardwareGeneration,
    JobState,
    JobStatus,
    JobSubmission,
    Liveness,
    Location,
    MatchPolicy,
    OfferWithdrawal,
    OwnerMode,
    SetPolicy,
    ShardAssignment,
    ShardCancel,
    ShardPreempted,
    ShardProgress,
    ShardRefused,
    ShardResult,
    SuspendReason,
    VehicleStatus,
    VehicleTelemetry,
    WaitReason,
)
from protocol.frames import CarRoster, OfferFrame, RosterEntry
from protocol.owners import CarEarnings, CarMoney, EarningsReport, ModeMoney, Money, RobotaxiTrip, SetOwnerMode

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
DIGEST = "ab" * 16


def env(sender: str = "car-0a1b2c3d4e") -> dict[str, object]:
    """The envelope fields every message carries."""
    return {"sender": sender, "sent_at": T0, "sim_time": T0 + timedelta(hours=1)}


def telemetry(sender: str = "car-0a1b2c3d4e") -> VehicleTelemetry:
    return VehicleTelemetry(
        **env(sender), soc=0.72, charge_state=ChargeState.CHARGING, gear=Gear.PARK,
        location=Location(latitude=35.68, longitude=139.77), vehicle_speed_kmh=0.0,
        pack_temp_c=24.5, inside_temp_c=19.0, scheduled_departure=T0 + timedelta(hours=9),
        locked=True, driver_seat_occupied=False, software_update_in_progress=False,
        battery_kwh=75.0, odometer_km=12345.6, hardware=HardwareGeneration.HW5, rated_tops=5000.0,
        tops_in_use=2500.0, compute_power_kw=0.4, owner_mode=OwnerMode.COMPUTE,
        compute_state=ComputeState.BUSY, suspend_reason=None, shard="asg-1", earned=1.25,
    )


def all_samples() -> list[AnyMessage]:
    """One valid message of every kind."""
    car = "car-0a1b2c3d4e"
    return [
        VehicleStatus(**env(car), state=Liveness.ONLINE, hardware=HardwareGeneration.HW4, gateway="gw-0"),
        ConnectionStatus(**env("gw-0"), role="gateway", state=Liveness.ONLINE, vehicle_count=12,
                         instance="0192a3b4c5d6.1f2e3d4c"),
        telemetry(car),
        VehicleTelemetry(**{**telemetry(car).model_dump(), "suspend_reason": SuspendReason.PACK_TOO_HOT,
                            "compute_state": ComputeState.SUSPENDED, "shard": None}),
        ComputeOffer(**env(car), offer_id="off-1", hardware=HardwareGeneration.HW5, free_tops=5000.0,
                     energy_budget_kwh=12.0, expected_departure=T0 + timedelta(hours=8),
                     departure_confidence=0.8, price_per_tops_hour=0.0004, soc=0.8, region="tokyo"),
        OfferWithdrawal(**env(car), offer_id="off-1", reason="owner returned"),
        JobSubmission(**env("operator"), job_id="job-1", name="llm batch", total_work_tera_ops=1e7, shards=10,
                      min_tops_per_car=100.0, max_parallel_shards=10, deadline=T0 + timedelta(days=1),
                      redundancy=1, checkpoint_interval_s=60.0),
        ShardAssignment(**env("dispatcher"), assignment_id="asg-1", vehicle_id=car, job_id="job-1",
                        shard_id="job-1.s0", work_tera_ops=1e6, resume_from_tera_ops=2e5, checkpoint="ck:2e5",
                        input_digest=DIGEST, allocated_tops=2500.0, checkpoint_interval_s=60.0,
                        price_per_tops_hour=0.0004),
        ShardCancel(**env("dispatcher"), assignment_id="asg-1", vehicle_id=car, reason="job cancelled"),
        ShardProgress(**env(car), assignment_id="asg-1", job_id="job-1", shard_id="job-1.s0",
                      done_tera_ops=3e5, checkpoint_tera_ops=3e5, checkpoint="ck:3e5"),
        ShardResult(**env(car), assignment_id="asg-1", job_id="job-1", shard_id="job-1.s0",
                    result_digest=DIGEST, work_tera_ops=8e5, energy_kwh=0.1, elapsed_s=320.0),
        ShardPreempted(**env(car), assignment_id="asg-1", job_id="job-1", shard_id="job-1.s0",
                       checkpoint_tera_ops=3e5, checkpoint="ck:3e5", work_tera_ops=1e5, energy_kwh=0.01,
                       reason="owner returned"),
        ShardRefused(**env(car), assignment_id="asg-1", reason="not addressed to this car"),
        JobState(**env("dispatcher"), job_id="job-1", name="llm batch", status=JobStatus.QUEUED,
                 shards_total=10, wait_reasons=(WaitReason(requirement="free_tops >= 100", cars_failing=3),)),
        FleetSummary(**env("dispatcher"), cars_known=3, cars_by_state={"online": 3, "busy": 1},
                     cars_by_hardware={"HW5": 3}, tops_total=15000.0, tops_offered=10000.0, tops_allocated=2500.0,
                     tops_by_hardware={"HW5": 15000.0}, jobs_by_status={"running": 1}, shards_completed=4,
                     work_done_tera_ops=4e6, throughput_tops=2500.0, preemptions=1, redone_tera_ops=1e4,
                     wrong_results_caught=0, earnings_gross=1.2, energy_kwh=0.5, energy_cost=0.1,
                     messages_per_s=120.0, messages_rejected=2, policy=MatchPolicy.FASTEST),
        SetPolicy(**env("operator"), policy=MatchPolicy.CHEAPEST),
        CancelJob(**env("operator"), job_id="job-1"),
        DriveAway(**env("operator"), vehicle_id=car),
        AddCars(**env("operator"), count=100, hardware_mix={"HW5": 0.5, "HW6": 0.5}),
        RobotaxiTrip(**env(car), trip_id=f"{car}-t1", paid_km=9.0, empty_km=3.6, duration_s=1080.0, energy_kwh=2.2),
        SetOwnerMode(**env("operator"), vehicle_id=car, owner_mode=OwnerMode.BOTH),
        CarEarnings(**env("dispatcher"), car=CarMoney(vehicle_id=car, owner_id="owner-01", owner_mode=OwnerMode.BOTH,
                                                      money=Money(compute_gross=3.07, energy_cost=0.4, net=2.67))),
        EarningsReport(**env("dispatcher"), fleet=Money(compute_gross=3.07, energy_cost=0.4, net=2.67), cars=1,
                       owners=1, by_mode=[ModeMoney(owner_mode=OwnerMode.COMPUTE, cars=1, car_days=1.0,
                                                    money=Money(compute_gross=3.07, energy_cost=0.4, net=2.67),
                                                    net_per_car_day=2.67, net_per_car_month=80.1,
                                                    payment_share=0.11)],
                       top_cars=[], top_owners=[]),
        CarRoster(**env("gw-0"), block=0, cars=[
            RosterEntry(vehicle_id=car, state=Liveness.ONLINE, hardware=HardwareGeneration.HW5, owner_id="owner-01"),
            RosterEntry(vehicle_id="car-9f8e7d6c5b", state=Liveness.OFFLINE, reason="owner sold the car")]),
        OfferFrame(**env("gw-0"), seq=7, offers=[
            ComputeOffer(**env(car), offer_id="off-2", hardware=HardwareGeneration.HW5, free_tops=5000.0,
                         energy_budget_kwh=12.0, expected_departure=T0 + timedelta(hours=8),
                         departure_confidence=0.8, price_per_tops_hour=0.0004, soc=0.8),
            OfferWithdrawal(**env("car-9f8e7d6c5b"), offer_id="off-3", reason="owner returned")]),
    ]
