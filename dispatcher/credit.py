"""How much work a car can have done: its allocated rate over the time it held the shard.

Like a volunteer-computing server (BOINC bounds a host's claimed credit by its benchmarked
speed), the dispatcher never believes a position further than `allocated_tops` x the
simulation seconds since the assignment, measured on its own clock. The cars' clocks share
`--sim-epoch` with it, so the only allowance is `CLOCK_SLACK_WALL_S` wall seconds (times the
speed): clock skew between processes and the fleet's tick, which stamps an assignment with
the time its tick began. That allowance decides what is refused, never what is paid
(`creditable`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.records import Attempt

CLOCK_SLACK_WALL_S = 1.0
RELATIVE_EPSILON = 1e-9  # float rounding of positions computed on both sides


@dataclass(frozen=True, slots=True)
class Moment:
    """When an event is applied: the dispatcher's simulation seconds, and the slack granted to cars."""

    now_s: float
    slack_s: float = 0.0


def reachable(attempt: Attempt, at: Moment) -> float:
    """The furthest absolute position the car can have reached by `at`, at most the shard's end."""
    elapsed = max(0.0, at.now_s - attempt.assigned_at + at.slack_s)
    return min(attempt.shard_work, attempt.resume_from + attempt.allocated_tops * elapsed)


def creditable(attempt: Attempt, now_s: float) -> float:
    """The furthest position the ledger pays for by `now_s`: the car's rate since its assignment, no slack.

    The slack only keeps an honest car's positions from being refused as impossible; paying it
    would hand a car that preempts the moment it gets a shard, and takes another, one slack of
    work each time for nothing.
    """
    return reachable(attempt, Moment(now_s))


def within(position: float, limit: float) -> bool:
    """Whether a claimed position is within a limit, up to float rounding."""
    return position <= limit + RELATIVE_EPSILON * max(1.0, abs(limit))


def finished_too_fast(attempt: Attempt, at: Moment) -> bool:
    """A result that arrives before the car's allocated rate could have finished the shard."""
    return not within(attempt.shard_work, reachable(attempt, at))


def reached_estimate(attempt: Attempt, last_heard_s: float) -> float:
    """Where a car that vanished or fell silent probably got to: its last report, or its rate up to
    when it was last heard, whichever is further, at most the shard's end."""
    by_rate = attempt.resume_from + attempt.allocated_tops * max(0.0, last_heard_s - attempt.assigned_at)
    return min(attempt.shard_work, max(attempt.done_tera_ops, by_rate))

