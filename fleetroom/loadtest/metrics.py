"""Latency histograms (HDR) overall and per second, and emqtt-bench style live counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # an hour, in microseconds
PERCENTILES = (50.0, 95.0, 99.0)


def _histogram(significant_figures: int = 3) -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, significant_figures)


def _clamp_us(seconds: float) -> int:
    return max(LOWEST_US, min(HIGHEST_US, round(seconds * 1e6)))


@dataclass(frozen=True)
class LatencyStats:
    """A latency distribution in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count, "p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms,
            "max_ms": self.max_ms, "mean_ms": self.mean_ms,
        }


def stats_of(histogram: HdrHistogram) -> LatencyStats:
    """Percentiles of an HDR histogram of microseconds, in milliseconds."""
    count = int(histogram.get_total_count())
    if count == 0:
        return LatencyStats(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    p50, p95, p99 = (histogram.get_value_at_percentile(p) / 1000.0 for p in PERCENTILES)
    return LatencyStats(
        count, p50, p95, p99, histogram.get_max_value() / 1000.0, histogram.get_mean_value() / 1000.0
    )


@dataclass(frozen=True)
class LatencyPoint:
    """One second of the latency-over-time series."""

    second: int
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class LatencyRecorder:
    """Records latencies (seconds) into one HDR histogram and one per second of the run."""

    def __init__(self) -> None:
        self.overall = _histogram()
        self._by_second: dict[int, HdrHistogram] = {}

    def record(self, latency_s: float, at_s: float) -> None:
        """Record `latency_s`, observed `at_s` seconds after the run started."""
        value = _clamp_us(latency_s)
        self.overall.record_value(value)
        second = max(0, int(at_s))
        bucket = self._by_second.get(second)
        if bucket is None:
            bucket = self._by_second[second] = _histogram(2)
        bucket.record_value(value)

    def stats(self) -> LatencyStats:
        return stats_of(self.overall)

    def series(self) -> list[LatencyPoint]:
        """Per-second p50, p99 and max, in order."""
        points = []
        for second in sorted(self._by_second):
            bucket = self._by_second[second]
            points.append(LatencyPoint(
                second, int(bucket.get_total_count()), bucket.get_value_at_percentile(50.0) / 1000.0,
                bucket.get_value_at_percentile(99.0) / 1000.0, bucket.get_max_value() / 1000.0,
            ))
        return points


@dataclass
class Counters:
    """What emqtt-bench prints, for a fleet: connects, publishes, receives, failures, reconnects."""

    connects: int = 0  # cars seen coming online
    reconnects: int = 0  # cars seen coming online again after being seen once
    publishes: int = 0  # messages the harness published (jobs, fleet commands)
    receives: int = 0  # messages the observer received
    failures: int = 0  # cars seen going offline (Last Will), harness publish failures
    rejected: int = 0  # messages the observer could not decode or that broke the topic map
    observer_reconnects: int = 0
    observer_dropped: int = 0  # messages the observer had no room for: it fell behind, the figures miss them
    frames_missed: int = 0  # offer frames lost on the way (gaps in a gateway's seq)
    state_changes: int = 0  # cars whose state a gateway's roster changed (or that left its roster)
    by_kind: dict[str, int] = field(default_factory=dict)

    def count_kind(self, kind: str) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1

    def as_dict(self) -> dict[str, object]:
        return {
            "connects": self.connects, "reconnects": self.reconnects, "publishes": self.publishes,
            "receives": self.receives, "failures": self.failures, "rejected": self.rejected,
            "observer_reconnects": self.observer_reconnects, "observer_dropped": self.observer_dropped,
            "frames_missed": self.frames_missed, "state_changes": self.state_changes,
            "by_kind": dict(sorted(self.by_kind.items())),
        }


class RateMeter:
    """Messages per second over a sliding window of whole seconds."""

    def __init__(self, window_s: int = 5) -> None:
        self.window_s = window_s
        self._counts: dict[int, int] = {}

    def add(self, at_s: float, n: int = 1) -> None:
        second = int(at_s)
        self._counts[second] = self._counts.get(second, 0) + n
        for old in [s for s in self._counts if s < second - self.window_s - 1]:
            del self._counts[old]

    def rate(self, now_s: float) -> float:
        """Average over the last complete `window_s` seconds before `now_s`."""
        end = int(now_s)
        total = sum(self._counts.get(s, 0) for s in range(end - self.window_s, end))
        return total / self.window_s
