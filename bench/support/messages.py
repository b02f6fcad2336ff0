"""Realistic wire messages for the benchmarks to publish and to feed the control room's store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from protocol import (
    ChargeState,
    ComputeOffer,
    ComputeState,
    FleetSummary,
    Gear,
    HardwareGeneration,
    Liveness,
    Location,
    MatchPolicy,
    OfferRequirements,
    OwnerMode,
    VehicleStatus,
    VehicleTelemetry,
    utc_now,
)
from protocol.vehicle_messages import HARDWARE_TOPS

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
RATED_TOPS: dict[str, float] = {str(gen): tops for gen, tops in HARDWARE_TOPS.items()}  # the catalogue's own figures


def telemetry(vid: str = "car-0a1b2c3d4e", compute: ComputeState = ComputeState.BUSY) -> VehicleTelemetry:
    """One HW5 car's telemetry, parked and charging, every optional field filled (about 640 bytes of JSON)."""
    busy = compute is ComputeState.BUSY
    return VehicleTelemetry(
        sender=vid, sent_at=T0, sim_time=T0 + timedelta(hours=1), soc=0.72, charge_state=ChargeState.CHARGING,
        gear=Gear.PARK, location=Location(latitude=35.68, longitude=139.77), vehicle_speed_kmh=0.0,
        pack_temp_c=24.5, inside_temp_c=19.0, scheduled_departure=T0 + timedelta(hours=9), locked=True,
        driver_seat_occupied=False, software_update_in_progress=False, battery_kwh=75.0, odometer_km=12345.6,
        hardware=HardwareGeneration.HW5, rated_tops=RATED_TOPS["HW5"], tops_in_use=2500.0 if busy else 0.0,
        compute_power_kw=0.4, owner_mode=OwnerMode.COMPUTE, compute_state=compute, suspend_reason=None,
        shard="asg-1" if busy else None, earned=1.25,
    )


def summary(cars: int, *, busy: int = 0) -> FleetSummary:
    """The dispatcher's summary of `cars` HW5 cars, all online, `busy` of them running shards."""
    tops = cars * RATED_TOPS["HW5"]
    return FleetSummary(
        sender="dispatcher", sent_at=T0, sim_time=T0, cars_known=cars,
        cars_by_state={"online": cars, "idle": cars - busy, "busy": busy}, cars_by_hardware={"HW5": cars},
        tops_total=tops, tops_offered=tops * 0.5, tops_allocated=tops * 0.25, tops_by_hardware={"HW5": tops},
        jobs_by_status={"running": 3, "queued": 1, "done": 7}, shards_completed=40, work_done_tera_ops=1e9,
        throughput_tops=2e5, preemptions=2, redone_tera_ops=1e4, wrong_results_caught=1, earnings_gross=123.45,
        energy_kwh=50.0, energy_cost=6.0, messages_per_s=250.0, messages_rejected=0, policy=MatchPolicy.FASTEST,
    )


def car_status(vid: str, sim_time: datetime, *, gateway: str | None = None) -> VehicleStatus:
    """A car's retained status: online, HW5, its own owner."""
    return VehicleStatus(sender=vid, sent_at=utc_now(), sim_time=sim_time, state=Liveness.ONLINE,
                         hardware=HardwareGeneration.HW5, gateway=gateway)


def car_offer(vid: str, seq: int, sim_time: datetime) -> ComputeOffer:
    """A parked HW5 car's offer of its whole rating until eight hours from `sim_time`, every field filled."""
    return ComputeOffer(
        sender=vid, sent_at=utc_now(), sim_time=sim_time, offer_id=f"{vid}-o{seq}", hardware=HardwareGeneration.HW5,
        free_tops=RATED_TOPS["HW5"], energy_budget_kwh=21.5, expected_departure=sim_time + timedelta(hours=8),
        departure_confidence=0.8, price_per_tops_hour=0.0021, soc=0.72, region="us-west",
        requirements=OfferRequirements(min_price_per_tops_hour=0.0021), pack_temp_c=24.5,
    )
