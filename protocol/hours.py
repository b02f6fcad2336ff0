"""When the datacenter is big: the share of cars parked by hour of the week, from the fleet's owner-day model.

The dispatcher forecasts the compute available over the next 24 simulated hours from this
table (and the control room only shows what the dispatcher says), so the forecast comes from
the same `protocol.owner_day` plans the emulated cars live by. The table is a sample of
`SAMPLE_OWNERS` owners (a fixed seed: the same table on every run), built once per process.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from functools import cache

from protocol import owner_day

SAMPLE_OWNERS = 800  # about 0.3 s once; the hourly shares it gives are within about 1.5 points of 10x more
SAMPLES_PER_HOUR = 4
SEED = 20_160_601
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@cache
def parked_share_table() -> tuple[tuple[float, ...], ...]:
    """The share of owners' cars parked, [weekday 0=Monday][hour 0..23], local time."""
    rng = random.Random(SEED)
    counts = [[0] * 24 for _ in range(7)]
    for _ in range(SAMPLE_OWNERS):
        profile = owner_day.COMMUTER if rng.random() < owner_day.COMMUTER_SHARE else owner_day.HOMEBODY
        for weekday in range(7):
            legs = owner_day.day_plan(profile, weekday, rng)
            for hour in range(24):
                for k in range(SAMPLES_PER_HOUR):
                    tod = (hour + (k + 0.5) / SAMPLES_PER_HOUR) * owner_day.HOUR
                    counts[weekday][hour] += not owner_day.position_at(legs, tod)[2]
    per_cell = SAMPLE_OWNERS * SAMPLES_PER_HOUR
    return tuple(tuple(n / per_cell for n in row) for row in counts)


def parked_share_at(local: datetime) -> float:
    """The model's share of cars parked at `local` time (its weekday and hour)."""
    return parked_share_table()[local.weekday()][local.hour]


def parked_share_by_weekday() -> tuple[float, ...]:
    """The model's share of cars parked over each day of the week, Monday first."""
    return tuple(sum(row) / 24 for row in parked_share_table())


def parked_share_week() -> float:
    """The model's share of cars parked over a whole week."""
    return sum(parked_share_by_weekday()) / 7


def forecast_tops(local_now: datetime, tops_of_cars: float, hours: int = 24) -> tuple[float, ...]:
    """Rated TOPS of parked cars for each of the next `hours` local hours, starting with this one."""
    start = local_now.replace(minute=0, second=0, microsecond=0)
    return tuple(tops_of_cars * parked_share_at(start + timedelta(hours=h)) for h in range(hours))


def what_if(forecast: tuple[float, ...], fleet_factor: float) -> tuple[float, ...]:
    """The forecast for a fleet `fleet_factor` times larger: the essay's linear scaling, a claim."""
    return tuple(fleet_factor * tops for tops in forecast)
