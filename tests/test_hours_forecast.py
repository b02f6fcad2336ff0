"""The hours forecast from the owner-day model: big at night, smaller at the commutes, 93-97% parked over a week."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from fake_vehicles.car import Car
from fake_vehicles.catalogue import DEFAULT_HARDWARE_MIX
from fake_vehicles.ids import vehicle_id
from protocol import hours

TUESDAY = datetime(2026, 12, 1, tzinfo=UTC)
SATURDAY = TUESDAY + timedelta(days=4)


def test_the_week_is_parked_93_to_97_percent() -> None:
    assert 0.93 <= hours.parked_share_week() <= 0.97
    by_day = hours.parked_share_by_weekday()
    assert len(by_day) == 7 and all(0.93 <= share <= 0.98 for share in by_day)
    assert by_day[5] > by_day[0], "weekends have no commute"


def test_big_at_night_and_shrinking_at_the_17_00_departure() -> None:
    forecast = hours.forecast_tops(TUESDAY.replace(hour=13), 1_000.0)
    at = dict(zip([(13 + i) % 24 for i in range(24)], forecast, strict=True))
    assert min(at[h] for h in (0, 1, 2, 3, 4)) >= 0.99 * 1_000.0, "at night nearly every car is parked"
    assert at[17] < 0.9 * 1_000.0 and at[17] < at[14] and at[17] < at[21], "the evening commute"
    assert at[7] < 0.9 * 1_000.0, "the morning commute"
    weekend = hours.forecast_tops(SATURDAY.replace(hour=13), 1_000.0)
    assert weekend[4] > at[17], "Saturday's 17:00 has no commute"


def test_the_forecast_starts_this_hour_and_crosses_midnight_into_the_next_day() -> None:
    late_friday = (TUESDAY + timedelta(days=3)).replace(hour=23, minute=40)
    forecast = hours.forecast_tops(late_friday, 100.0)
    table = hours.parked_share_table()
    assert forecast[0] == pytest.approx(100.0 * table[4][23])
    assert forecast[8] == pytest.approx(100.0 * table[5][7]), "Saturday 07:00, not a weekday commute"
    assert hours.what_if(forecast, 1_000) == pytest.approx([1_000 * x for x in forecast])


def test_the_forecast_is_the_fleets_own_day_model() -> None:
    """Cars of the emulated fleet, placed by their own plans, are parked at each hour as the table says."""
    mix = [(share, gen) for gen, share in DEFAULT_HARDWARE_MIX.items()]
    cars = [Car.create(i, vehicle_id(5, i), 5_000_000 + i, mix, 0.0, TUESDAY.timestamp(), random.Random())
            for i in range(1_500)]
    rng = random.Random(0)
    for hour in (3, 7, 12, 17, 20):
        t = (TUESDAY + timedelta(hours=hour, minutes=30)).timestamp()
        for car in cars:
            car.place_at(t, rng)
        parked = sum(not car.driving for car in cars) / len(cars)
        assert parked == pytest.approx(hours.parked_share_table()[1][hour], abs=0.03), hour
