"""Robotaxi duty of the emulated cars (pure): ride time only while on duty, one trip at a time, trip ids
that a restarted fleet process does not reuse."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from fake_vehicles.car import Car
from fake_vehicles.robotaxi import TRIP_S, Robotaxi
from protocol.codec import decode
from protocol.owners import RobotaxiTrip
from protocol.topics import Channel
from protocol.vehicle_messages import OwnerMode
from tests.test_vehicle_model import MONDAY_10AM, make_car


def _on_duty_car() -> Car:
    car = make_car(3)
    car.owner_mode, car.driving, car.owner_back, car.silent, car.shard = OwnerMode.ROBOTAXI, False, False, False, None
    car.arrived_at, car.soc = MONDAY_10AM - 3600.0, 0.9
    return car


def _drive_on(robotaxi: Robotaxi, car: Car, start: float, end: float, step_s: float) -> list[RobotaxiTrip]:
    trips: list[RobotaxiTrip] = []

    def send(_car: Car, channel: Channel, payload: bytes) -> None:
        assert channel is Channel.TRIPS
        message = decode(payload)
        assert isinstance(message, RobotaxiTrip)
        trips.append(message)

    t = start
    while t <= end:
        car.soc = 0.9
        robotaxi.look(car, t, send, (datetime.fromtimestamp(t, UTC), datetime.fromtimestamp(t, UTC)))
        t += step_s
    return trips


def test_time_off_duty_earns_no_ride_time() -> None:
    car, robotaxi = _on_duty_car(), Robotaxi()
    car.driving = True  # off duty when first looked at
    _drive_on(robotaxi, car, MONDAY_10AM, MONDAY_10AM, 1.0)
    car.driving = False
    _drive_on(robotaxi, car, MONDAY_10AM + 3000.0, MONDAY_10AM + 3000.0, 1.0)
    assert robotaxi.ride_s[car.index] == 0.0


def test_trips_follow_one_another_and_their_ids_survive_a_restart() -> None:
    car = _on_duty_car()
    trips = _drive_on(Robotaxi(), car, MONDAY_10AM, MONDAY_10AM + 8 * 3600.0, 61.0)
    trips += _drive_on(Robotaxi(), car, MONDAY_10AM + 8 * 3600.0 + 1, MONDAY_10AM + 10 * 3600.0, 3599.0)
    assert len(trips) >= 7
    for before, after in itertools.pairwise(trips):
        assert after.sim_time.timestamp() - after.duration_s >= before.sim_time.timestamp()
    again = _drive_on(Robotaxi(), car, MONDAY_10AM + 9 * 3600.0, MONDAY_10AM + 12 * 3600.0, 700.0)  # restarted
    assert again and not {t.trip_id for t in again} & {t.trip_id for t in trips}
    assert len({t.trip_id for t in trips}) == len(trips) and trips[0].duration_s == TRIP_S
