"""Robotaxi duty of the emulated cars: paid trips at the assumed utilisation, reported to the dispatcher.

A car in robotaxi or both mode that is parked, settled, free and charged, in the hours riders
want rides (`protocol.owners`), earns ride time at the assumed paid share of that time; each
time it has a trip's worth, it makes one trip of the assumed length (plus the empty driving to
the rider), which costs its battery energy, and reports it (`RobotaxiTrip`). The car stays where
it was: trips are short against the owner's day, and the owner's plan is not changed by them.
The dispatcher, not the car, prices the trip.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fake_vehicles.car import LOW_MARGIN, SETTLE_S, Car
from protocol.codec import encode
from protocol.owners import EMPTY_KM, PAID_SHARE, ROBOTAXI_MODES, TRIP_KM, TRIP_MIN, RobotaxiTrip, in_robotaxi_hours
from protocol.topics import Channel

TRIP_S = TRIP_MIN.value * 60.0
MAX_LOOK_GAP_S = 3600.0  # ride time earned between two looks at a car is capped by this gap

Send = Callable[[Car, Channel, bytes], None]


def on_duty(car: Car, t: float) -> bool:
    """Whether the car can carry riders now."""
    return (car.owner_mode in ROBOTAXI_MODES and not car.driving and not car.owner_back and not car.silent
            and car.shard is None and t - car.arrived_at >= SETTLE_S and car.soc >= car.reserve_soc + LOW_MARGIN
            and in_robotaxi_hours(t))


class Robotaxi:
    """Ride time earned and trips made by the cars on robotaxi duty of one fleet process."""

    def __init__(self) -> None:
        self.looked_at: dict[int, float] = {}  # car index -> when the sweep last looked
        self.ride_s: dict[int, float] = {}  # ride time earned and not yet driven

    def look(self, car: Car, t: float, send: Send, stamp: tuple[object, object]) -> bool:
        """Earn ride time since the last look; make and report a trip when there is one; True if it did."""
        if not on_duty(car, t):
            self.looked_at.pop(car.index, None)  # time off duty earns no ride time
            return False
        last = self.looked_at.get(car.index, t)
        self.looked_at[car.index] = t
        ride_s = self.ride_s.get(car.index, 0.0) + min(t - last, MAX_LOOK_GAP_S) * PAID_SHARE.value
        if ride_s < TRIP_S:  # ride time accrues at the paid share (< 1) of time: trips never overlap
            self.ride_s[car.index] = ride_s
            return False
        self.ride_s[car.index] = ride_s - TRIP_S
        send(car, Channel.TRIPS, encode(self.drive(car, stamp)))
        return True

    @staticmethod
    def drive(car: Car, stamp: tuple[object, object]) -> RobotaxiTrip:
        """Make a trip of `car` ending now: its distance on the odometer, its energy from the battery.

        Its id is the car's and the trip's end on the simulated clock, unique across fleet restarts."""
        paid_km, empty_km = TRIP_KM.value, TRIP_KM.value * EMPTY_KM.value
        energy_kwh = (paid_km + empty_km) * car.model.kwh_per_km
        car.soc = max(0.02, car.soc - energy_kwh / car.model.battery_kwh)
        car.odometer_km += paid_km + empty_km
        sent_at, sim_time = stamp
        ends = sim_time.strftime("%Y%m%dt%H%M%S") if isinstance(sim_time, datetime) else str(sim_time)
        return RobotaxiTrip.model_validate({
            "sender": car.vehicle_id, "sent_at": sent_at, "sim_time": sim_time, "trip_id": f"{car.vehicle_id}-{ends}",
            "paid_km": paid_km, "empty_km": empty_km, "duration_s": TRIP_S, "energy_kwh": round(energy_kwh, 4),
        })
