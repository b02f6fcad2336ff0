"""A car's state as fleet-telemetry MQTT records: one topic per field, and connectivity events.

With `fleetroom vehicles --telemetry-format fleet-telemetry` the runner publishes these beside
the project's own messages (see `protocol.fleet_telemetry` for the layout and its source). The
encoder only formats: it reads the car, never changes it, and keeps which cars it has announced
as connected so that each connection gets one CONNECTED and one DISCONNECTED event.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime

from fake_vehicles.car import DRIVE_SPEED_KMH, UPDATE_LENGTH_S, UPDATE_START_S, Car
from fake_vehicles.catalogue import FAST_CHARGER_KW
from fake_vehicles.messages import location_of
from protocol import owner_day as days
from protocol.fleet_telemetry import CONNECTIVITY_DELIVERY, FIELD_DELIVERY, MILES_PER_KM, connectivity_topic
from protocol.power import ambient_c
from protocol.topics import Channel, Delivery
from protocol.vehicle_messages import ChargeState

Record = tuple[str, bytes]  # (topic, payload)

CABIN_ABOVE_OUTSIDE_C = 3.0  # as the project's telemetry has it (`inside_temp_c`)
_SHIFT = {False: b'"ShiftStateP"', True: b'"ShiftStateD"'}
_CHARGE = {
    ChargeState.DISCONNECTED: b'"DetailedChargeStateDisconnected"',
    ChargeState.NO_POWER: b'"DetailedChargeStateNoPower"',
    ChargeState.STARTING: b'"DetailedChargeStateStarting"', ChargeState.CHARGING: b'"DetailedChargeStateCharging"',
    ChargeState.COMPLETE: b'"DetailedChargeStateComplete"', ChargeState.STOPPED: b'"DetailedChargeStateStopped"',
}
_BOOL = {True: b"true", False: b"false"}


def update_percent(car: Car) -> float:
    """How far the night's software update has installed, 0..100 (0 when none is installing)."""
    if not car.updating(car.t):
        return 0.0
    return round(100.0 * ((car.t % days.DAY) - UPDATE_START_S) / UPDATE_LENGTH_S, 1)


def field_values(car: Car) -> dict[str, bytes]:
    """Field name -> its JSON value (typed, as with `prefer_typed`), from the car's state now."""
    soc = f"{car.soc * 100:.2f}".encode()
    charge_state = car.charge_state()
    charging = charge_state is ChargeState.CHARGING
    dc = charging and car.charger_kw >= FAST_CHARGER_KW
    charger = f"{car.charger_kw:.1f}".encode()
    lat, lon = location_of(car)
    outside = ambient_c(car.t)
    return {
        "Soc": soc,
        "BatteryLevel": soc,
        "EnergyRemaining": f"{car.soc * car.model.battery_kwh:.2f}".encode(),
        "DetailedChargeState": _CHARGE[charge_state],
        "ACChargingPower": charger if charging and not dc else b"0.0",
        "DCChargingPower": charger if dc else b"0.0",
        "Gear": _SHIFT[car.driving],
        "VehicleSpeed": f"{DRIVE_SPEED_KMH * MILES_PER_KM:.1f}".encode() if car.driving else b"0.0",
        "Location": json.dumps({"latitude": lat, "longitude": lon}).encode(),
        "Odometer": f"{car.odometer_km * MILES_PER_KM:.2f}".encode(),
        "ModuleTempMax": f"{car.pack_temp_c:.2f}".encode(),
        "InsideTemp": f"{outside + CABIN_ABOVE_OUTSIDE_C:.2f}".encode(),
        "OutsideTemp": f"{outside:.2f}".encode(),
        "Locked": _BOOL[not (car.driving or car.owner_back)],
        "DriverSeatOccupied": _BOOL[car.driving],
        "SoftwareUpdateInstallationPercentComplete": f"{update_percent(car):.1f}".encode(),
    }


class FleetTelemetryEncoder:
    """Builds one fleet process's fleet-telemetry records under one topic base."""

    def __init__(self, base: str, seed: int) -> None:
        self.base = base
        self._ids = random.Random(seed ^ 0xF1EE7)  # connection ids: random-looking, the same for a seed
        self.connections: dict[str, str] = {}  # car id -> id of its connection announced as CONNECTED

    def records(self, car: Car) -> list[Record]:
        """One record per field of `car`, on `<base>/<car id>/v/<Field>`."""
        prefix = f"{self.base}/{car.vehicle_id}/v/"
        return [(prefix + name, value) for name, value in field_values(car).items()]

    def following(self, car: Car, channel: Channel, at: datetime, *, leaving: bool = False) -> tuple[
            list[Record], Delivery]:
        """The records that follow one of the car's own messages: fields after its telemetry, an event after its status.

        A status is `online` unless `leaving` (the fleet sends `offline` ones only when it stops).
        """
        if channel is Channel.TELEMETRY:
            return self.records(car), FIELD_DELIVERY
        if channel is not Channel.VEHICLE_STATUS:
            return [], FIELD_DELIVERY
        event = self.disconnected(car.vehicle_id, at) if leaving else self.connected(car.vehicle_id, at)
        return ([] if event is None else [event]), CONNECTIVITY_DELIVERY

    def connected(self, vehicle_id: str, at: datetime) -> Record | None:
        """A CONNECTED event with a fresh connection id; None if the car is already announced as connected."""
        if vehicle_id in self.connections:
            return None
        connection_id = self.connections[vehicle_id] = str(uuid.UUID(int=self._ids.getrandbits(128), version=4))
        return self._event(vehicle_id, connection_id, "CONNECTED", at)

    def disconnected(self, vehicle_id: str, at: datetime) -> Record | None:
        """The DISCONNECTED event of the car's connection; None if it was not announced as connected."""
        connection_id = self.connections.pop(vehicle_id, None)
        if connection_id is None:
            return None
        return self._event(vehicle_id, connection_id, "DISCONNECTED", at)

    def lost(self, vehicle_id: str) -> None:
        """The car's connection was lost unseen: its next status announces a new one."""
        self.connections.pop(vehicle_id, None)

    def forget_all(self) -> None:
        """Every connection was lost unseen (our own went down): the next status announces each car afresh."""
        self.connections.clear()

    def _event(self, vehicle_id: str, connection_id: str, status: str, at: datetime) -> Record:
        payload = {"ConnectionId": connection_id, "Status": status, "CreatedAt": at.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return connectivity_topic(self.base, vehicle_id), json.dumps(payload).encode()
