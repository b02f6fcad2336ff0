"""An owner's day: trips between home, work and errands, as a time-of-day mixture of stays.

Stays fall into two groups whose mix changes through the day (Reis & Sargento, 2016): long
ones (night at home, a working day) and short ones (errands, lunch). A day plan is a pure
function of the owner's profile, the day and a random generator, so a car regenerates it
when needed instead of storing it.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

HOUR = 3600.0
MINUTE = 60.0
DAY = 86400.0

HOME, WORK, ERRAND = 0, 1, 2

COMMUTER, HOMEBODY = 0, 1
COMMUTER_SHARE = 0.7  # assumption: most owners drive to work on weekdays
MIN_STAY_S = 5 * MINUTE


class Leg(NamedTuple):
    """One trip: leave at `depart_s` (seconds since local midnight), drive `drive_s`, park at `dest`."""

    depart_s: float
    drive_s: float
    dest: int
    confident: bool  # a routine departure (commute) the car can predict well


def _lognormal(rng: random.Random, median: float, sigma: float, low: float, high: float) -> float:
    return min(high, max(low, median * math.exp(rng.gauss(0.0, sigma))))


def _commuter_weekday(rng: random.Random) -> list[Leg]:
    legs: list[Leg] = []
    commute = _lognormal(rng, 22 * MINUTE, 0.4, 5 * MINUTE, 75 * MINUTE)
    leave = min(10 * HOUR, max(5.5 * HOUR, 7.5 * HOUR + rng.gauss(0.0, 0.5 * HOUR)))
    legs.append(Leg(leave, commute, WORK, True))
    t = leave + commute
    if rng.random() < 0.25:  # a lunch errand near work
        go = max(t + 2 * HOUR, 12 * HOUR + rng.gauss(0.0, 0.3 * HOUR))
        legs.append(Leg(go, 8 * MINUTE, ERRAND, False))
        back = go + 8 * MINUTE + rng.uniform(25, 60) * MINUTE
        legs.append(Leg(back, 8 * MINUTE, WORK, False))
        t = back + 8 * MINUTE
    leave_work = max(t + 30 * MINUTE, leave + commute + 8.5 * HOUR + rng.gauss(0.0, 0.6 * HOUR))
    if rng.random() < 0.35:  # an errand on the way home
        legs.append(Leg(leave_work, 15 * MINUTE, ERRAND, True))
        stay = _lognormal(rng, 30 * MINUTE, 0.5, 10 * MINUTE, 2 * HOUR)
        t = leave_work + 15 * MINUTE + stay
        legs.append(Leg(t, commute * 0.8, HOME, False))
        t += commute * 0.8
    else:
        legs.append(Leg(leave_work, commute, HOME, True))
        t = leave_work + commute
    if rng.random() < 0.25:
        legs += _round_trip(rng, max(t + 30 * MINUTE, 19 * HOUR + rng.gauss(0.0, 0.7 * HOUR)), 60 * MINUTE)
    return legs


def _round_trip(rng: random.Random, go: float, median_stay: float) -> list[Leg]:
    drive = _lognormal(rng, 13 * MINUTE, 0.5, 3 * MINUTE, 60 * MINUTE)
    if rng.random() < 0.8:
        stay = _lognormal(rng, median_stay, 0.5, 10 * MINUTE, 3 * HOUR)
    else:  # a visit: one of the long stays of the day
        stay = rng.uniform(2 * HOUR, 5 * HOUR)
    back = go + drive + stay
    if back + drive > 23.8 * HOUR:
        return []
    return [Leg(go, drive, ERRAND, False), Leg(back, drive, HOME, False)]


def _free_day(rng: random.Random) -> list[Leg]:
    n = rng.choices((0, 1, 2, 3), weights=(0.1, 0.35, 0.35, 0.2))[0]
    starts = sorted(rng.uniform(9 * HOUR, 19 * HOUR) for _ in range(n))
    legs: list[Leg] = []
    t = 0.0
    for start in starts:
        trip = _round_trip(rng, max(start, t + 20 * MINUTE), 40 * MINUTE)
        if trip:
            legs += trip
            t = trip[1].depart_s + trip[1].drive_s
    return legs


def day_plan(profile: int, weekday: int, rng: random.Random) -> list[Leg]:
    """The trips of one day; every day starts and ends at home (`weekday` 0 is Monday)."""
    if profile == COMMUTER and weekday < 5:
        return _commuter_weekday(rng)
    return _free_day(rng)


def position_at(legs: list[Leg], tod_s: float) -> tuple[int, int, bool]:
    """Where a car is at `tod_s` on a planned day: (next leg index, place, driving)."""
    place = HOME
    for i, leg in enumerate(legs):
        if tod_s < leg.depart_s:
            return i, place, False
        if tod_s < leg.depart_s + leg.drive_s:
            return i, leg.dest, True
        place = leg.dest
    return len(legs), place, False
