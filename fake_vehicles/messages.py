"""Wire messages a car sends, encoded to bytes; telemetry and offers by a fast path that pre-formats what it can.

Most messages are built as their `protocol` model and encoded by the codec. Telemetry is by far
the most frequent message, and offers and withdrawals come from every car of a million as it
joins, so they are formatted directly as JSON from the car's state; tests check that the codec
decodes each to the same model the slow path builds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fake_vehicles.car import Car
from fake_vehicles.catalogue import CURRENCY
from protocol.base import HardwareGeneration
from protocol.codec import encode
from protocol.job_messages import ShardPreempted, ShardProgress, ShardRefused, ShardResult
from protocol.power import ambient_c
from protocol.topics import VEHICLE_LEAF, Channel, Topics
from protocol.vehicle_messages import (
    ChargeState,
    ComputeOffer,
    ComputeState,
    ConnectionStatus,
    Gear,
    Liveness,
    Location,
    OfferRequirements,
    OwnerMode,
    SuspendReason,
    VehicleStatus,
    VehicleTelemetry,
)

REGIONS = (("sf-bay", 37.77, -122.42), ("los-angeles", 34.05, -118.24), ("seattle", 47.61, -122.33),
           ("portland", 45.52, -122.68))
"""Assumption: one Pacific-time market; local time is the simulation clock's offset."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PARKED_LOCKED = '"gear":"P","vehicle_speed_kmh":0.0,"locked":true,"driver_seat_occupied":false'
_PARKED_UNLOCKED = '"gear":"P","vehicle_speed_kmh":0.0,"locked":false,"driver_seat_occupied":false'
_CHARGE_JSON = {state: f'"{state.value}"' for state in ChargeState}
_STATE_JSON = {state: f'"{state.value}"' for state in ComputeState}
_REASON_JSON: dict[SuspendReason | None, str] = {reason: f'"{reason.value}"' for reason in SuspendReason}
_REASON_JSON[None] = "null"
_GENERATION_JSON = {generation: generation.value for generation in HardwareGeneration}


def location_of(car: Car) -> tuple[float, float]:
    """The car's place, rounded to 0.01° (about 1 km) so that telemetry does not reveal a home."""
    _, lat, lon = REGIONS[car.region]
    bits = car.seed >> (8 * car.place)
    lat += ((bits & 0xFF) / 255.0 - 0.5) * 0.3
    lon += (((bits >> 8) & 0xFF) / 255.0 - 0.5) * 0.3
    return round(lat, 2), round(lon, 2)


FLEET_OWNED_SHARE = 10  # percent; assumption: rental and ride-hail fleets own some of the cars
FLEET_OWNERS = 50


def owner_of(car: Car) -> str | None:
    """A pseudonymous owner for cars in a fleet owner's hands; None when the car is its owner's only one."""
    if (car.seed >> 17) % 100 >= FLEET_OWNED_SHARE:
        return None
    return f"owner-{(car.seed >> 24) % FLEET_OWNERS:02d}"


class Encoder:
    """Builds one process's messages; `stamp` sets the wall and simulation time for a tick."""

    def __init__(self, topics: Topics, utc_offset_s: float, gateway: str | None) -> None:
        self.topics = topics
        self.root = topics.root
        self.utc_offset_s = utc_offset_s
        self.gateway = gateway
        self.sent_at = _EPOCH
        self.sim_time = _EPOCH
        self._stamp = '"sent_at":"1970-01-01T00:00:00Z","sim_time":"1970-01-01T00:00:00Z"'
        self._static: dict[tuple[int, int, OwnerMode], str] = {}
        self._dates: dict[int, str] = {}

    def stamp(self, sent_at: datetime, local_t: float) -> None:
        """Use these times in every message until the next call."""
        self.sent_at = sent_at
        self.sim_time = self.to_datetime(local_t)
        self._stamp = f'"sent_at":"{_iso(sent_at)}","sim_time":"{_iso(self.sim_time)}"'

    @property
    def stamp_json(self) -> str:
        """`"sent_at":...,"sim_time":...` of the current stamp, for messages formatted directly as JSON."""
        return self._stamp

    def to_datetime(self, local_t: float) -> datetime:
        return _EPOCH + timedelta(seconds=local_t - self.utc_offset_s)

    # topics (ids are valid by construction, so no per-message check) ------------------------
    def topic(self, vid: str, channel: Channel) -> str:
        """The topic on which car `vid` publishes `channel` (one of the vehicle channels)."""
        return f"{self.root}/vehicles/{vid}/{VEHICLE_LEAF[channel]}"

    # slow path: protocol models --------------------------------------------------------------
    def status(self, car: Car, state: Liveness, reason: str = "") -> bytes:
        return encode(VehicleStatus(
            sender=car.vehicle_id, sent_at=self.sent_at, sim_time=self.sim_time, state=state,
            hardware=car.hardware.generation, gateway=self.gateway, reason=reason, owner_id=owner_of(car),
            owner_mode=car.owner_mode,
        ))

    def connection_status(self, name: str, state: Liveness, vehicle_count: int, instance: str = "", *,
                          frames: bool = False) -> bytes:
        return encode(ConnectionStatus(
            sender=name, sent_at=self.sent_at, sim_time=self.sim_time, role="gateway",
            state=state, vehicle_count=vehicle_count, instance=instance, frames=frames,
        ))

    def offer(self, car: Car, offer_id: str) -> bytes:
        """The car's offer as JSON bytes, equal after decoding to `offer_model` (every car offers: the fast path)."""
        departure, confidence = car.expected_departure()
        hw, price = car.hardware, car.price
        return (
            f'{{"schema_version":1,"kind":"offer","sender":"{car.vehicle_id}",{self._stamp},'
            f'"offer_id":"{offer_id}","hardware":"{_GENERATION_JSON[hw.generation]}","free_tops":{hw.tops!r},'
            f'"energy_budget_kwh":{round(car.energy_budget_kwh(), 3)!r},'
            f'"expected_departure":"{_iso(self.to_datetime(departure))}","departure_confidence":{confidence!r},'
            f'"price_per_tops_hour":{price!r},"currency":"{CURRENCY}","soc":{round(car.soc, 4)!r},'
            f'"region":"{REGIONS[car.region][0]}","requirements":{{"min_price_per_tops_hour":{price!r},'
            f'"max_shard_hours":null,"max_priority_wait":null}},"pack_temp_c":{round(car.pack_temp_c, 2)!r}}}'
        ).encode()

    def offer_model(self, car: Car, offer_id: str) -> ComputeOffer:
        """The slow path, for tests: the same offer as a protocol model."""
        departure, confidence = car.expected_departure()
        return ComputeOffer(
            sender=car.vehicle_id, sent_at=self.sent_at, sim_time=self.sim_time, offer_id=offer_id,
            hardware=car.hardware.generation, free_tops=car.hardware.tops,
            energy_budget_kwh=round(car.energy_budget_kwh(), 3), expected_departure=self.to_datetime(departure),
            departure_confidence=confidence, price_per_tops_hour=car.price, currency=CURRENCY,
            soc=round(car.soc, 4), region=REGIONS[car.region][0],
            requirements=OfferRequirements(min_price_per_tops_hour=car.price), pack_temp_c=round(car.pack_temp_c, 2),
        )

    def withdrawal(self, car: Car, offer_id: str, reason: str) -> bytes:
        """The car's withdrawal as JSON bytes, equal after decoding to the `OfferWithdrawal` the codec would encode."""
        return (f'{{"schema_version":1,"kind":"offer_withdrawn","sender":"{car.vehicle_id}",{self._stamp},'
                f'"offer_id":"{offer_id}","reason":{json.dumps(reason)}}}').encode()

    def progress(self, car: Car) -> bytes:
        shard = car.shard
        assert shard is not None
        a = shard.assignment
        return encode(ShardProgress(
            sender=car.vehicle_id, sent_at=self.sent_at, sim_time=self.sim_time, assignment_id=a.assignment_id,
            job_id=a.job_id, shard_id=a.shard_id, done_tera_ops=shard.done_tera_ops,
            checkpoint_tera_ops=shard.checkpoint_tera_ops, checkpoint=shard.checkpoint,
        ))

    def result(self, car: Car, digest: str, now: float) -> bytes:
        shard = car.shard
        assert shard is not None
        a = shard.assignment
        return encode(ShardResult(
            sender=car.vehicle_id, sent_at=self.sent_at, sim_time=self.sim_time, assignment_id=a.assignment_id,
            job_id=a.job_id, shard_id=a.shard_id, result_digest=digest,
            work_tera_ops=max(shard.work_this_assignment, 1e-9), energy_kwh=shard.energy_kwh,
            elapsed_s=max(0.0, now - shard.started_t),
        ))

    def preempted(self, car: Car, reason: str) -> bytes:
        shard = car.shard
        assert shard is not None
        a = shard.assignment
        return encode(ShardPreempted(
            sender=car.vehicle_id, sent_at=self.sent_at, sim_time=self.sim_time, assignment_id=a.assignment_id,
            job_id=a.job_id, shard_id=a.shard_id, checkpoint_tera_ops=shard.checkpoint_tera_ops,
            checkpoint=shard.checkpoint, work_tera_ops=shard.work_this_assignment,
            energy_kwh=shard.energy_kwh, reason=reason,
        ))

    def refused(self, vehicle_id: str, assignment_id: str, reason: str) -> bytes:
        return encode(ShardRefused(
            sender=vehicle_id, sent_at=self.sent_at, sim_time=self.sim_time, assignment_id=assignment_id,
            reason=reason[:500],
        ))

    # fast path: telemetry -------------------------------------------------------------------
    def telemetry(self, car: Car, reason: SuspendReason | None, state: ComputeState) -> bytes:
        """The car's telemetry as JSON bytes, equal after decoding to `telemetry_model`.

        Field order differs from the model's (JSON objects are unordered): what a car never
        changes is formatted once per hardware, model and owner mode and reused.
        """
        hw = car.hardware
        key = (id(hw), id(car.model), car.owner_mode)
        static = self._static.get(key)
        if static is None:
            static = self._static[key] = (
                f'"battery_kwh":{car.model.battery_kwh},"hardware":"{hw.generation.value}",'
                f'"rated_tops":{hw.tops},"owner_mode":"{car.owner_mode.value}"'
            )
        shard = car.shard
        driving = car.driving
        if shard is not None and state is ComputeState.BUSY:
            tops = shard.tops
            power = f"{hw.compute_power_kw * tops / hw.tops:.4f}"
        else:
            tops, power = 0.0, "0.0"
        if driving:
            moving, charge = '"gear":"D","vehicle_speed_kmh":40.0,"locked":false,"driver_seat_occupied":true', \
                '"disconnected"'
            departure = "null"
        else:
            moving = _PARKED_UNLOCKED if car.owner_back else _PARKED_LOCKED
            charge = _CHARGE_JSON[car.charge_state()]
            departure = f'"{self._iso_seconds(car.next_at)}"' if car.confident else "null"
        lat, lon = location_of(car)
        return (
            f'{{"schema_version":1,"kind":"telemetry","sender":"{car.vehicle_id}",{self._stamp},{static},'
            f'{moving},"soc":{car.soc:.4f},"charge_state":{charge},'
            f'"location":{{"latitude":{lat},"longitude":{lon}}},"pack_temp_c":{car.pack_temp_c:.2f},'
            f'"inside_temp_c":{ambient_c(car.t) + 3.0:.2f},"scheduled_departure":{departure},'
            f'"software_update_in_progress":{"true" if reason is SuspendReason.SOFTWARE_UPDATE else "false"},'
            f'"odometer_km":{car.odometer_km:.2f},"tops_in_use":{tops},"compute_power_kw":{power},'
            f'"compute_state":{_STATE_JSON[state]},"suspend_reason":{_REASON_JSON[reason]},'
            f'"shard":{"null" if shard is None else chr(34) + shard.assignment.assignment_id + chr(34)},'
            f'"earned":{car.earned:.6f}}}'
        ).encode()

    def _iso_seconds(self, local_t: float) -> str:
        """ISO 8601 UTC to the second, with the date part cached: cheaper than a datetime per message."""
        seconds = int(local_t - self.utc_offset_s)
        day, rest = divmod(seconds, 86400)
        date = self._dates.get(day)
        if date is None:
            date = self._dates[day] = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
        return f"{date}T{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}Z"

    def telemetry_model(self, car: Car, reason: SuspendReason | None, state: ComputeState) -> VehicleTelemetry:
        """The slow path, for tests: the same telemetry as a protocol model."""
        lat, lon = location_of(car)
        shard = car.shard
        tops = shard.tops if shard is not None and state is ComputeState.BUSY else 0.0
        hw = car.hardware
        departure = None
        if car.confident and not car.driving:
            departure = _EPOCH + timedelta(seconds=int(car.next_at - self.utc_offset_s))
        return VehicleTelemetry(
            sender=car.vehicle_id, sent_at=self.sent_at, sim_time=self.sim_time,
            soc=round(car.soc, 4), charge_state=car.charge_state(), gear=Gear.DRIVE if car.driving else Gear.PARK,
            location=Location(latitude=lat, longitude=lon), vehicle_speed_kmh=40.0 if car.driving else 0.0,
            pack_temp_c=round(car.pack_temp_c, 2), inside_temp_c=round(ambient_c(car.t) + 3.0, 2),
            scheduled_departure=departure, locked=not (car.driving or car.owner_back),
            driver_seat_occupied=car.driving, software_update_in_progress=reason is SuspendReason.SOFTWARE_UPDATE,
            battery_kwh=car.model.battery_kwh, odometer_km=round(car.odometer_km, 2), hardware=hw.generation,
            rated_tops=hw.tops, tops_in_use=tops,
            compute_power_kw=round(hw.compute_power_kw * tops / hw.tops, 4) if tops else 0.0,
            owner_mode=car.owner_mode, compute_state=state, suspend_reason=reason,
            shard=None if shard is None else shard.assignment.assignment_id, earned=round(car.earned, 6),
        )


def _iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, microseconds included."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

