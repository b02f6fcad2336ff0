"""The live line on stderr while a load test runs: stage, a progress bar and emqtt-bench counters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from fleetroom.loadtest.ledger import RunLedger

BAR_WIDTH = 24


@dataclass(frozen=True)
class Progress:
    """A snapshot of where the run is, for one progress line."""

    stage_index: int
    stage_count: int
    stage_label: str
    elapsed_s: float
    planned_s: float


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A text progress bar of `width` cells, e.g. `[#####-----]`."""
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def progress_line(progress: Progress, ledger: RunLedger, now_s: float) -> str:
    """One line: stage, bar, elapsed, then connects, publishes, receives, failures, reconnects."""
    c = ledger.counters
    fraction = progress.elapsed_s / progress.planned_s if progress.planned_s > 0 else 0.0
    latency = ledger.latency.stats()
    outcome = ledger.outcome()
    return (
        f"{progress.stage_index}/{progress.stage_count} {progress.stage_label:<16.16} {bar(fraction)} "
        f"{progress.elapsed_s:5.0f}s  conn {c.connects} pub {c.publishes} "
        f"recv {c.receives} ({ledger.rate.rate(now_s):,.0f}/s) fail {c.failures} reconn {c.reconnects}  "
        f"cars {ledger.cars_online()} jobs {outcome.completed}/{outcome.submitted} p99 {latency.p99_ms:,.0f}ms"
    )


class ProgressPrinter:
    """Rewrites one line on a terminal; prints a line every `every_s` seconds elsewhere."""

    def __init__(self, stream: TextIO, every_s: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every_s = every_s
        self._last_printed = -1e9

    def show(self, line: str, now_s: float) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        elif now_s - self._last_printed >= self.every_s:
            self.stream.write(line + "\n")
            self._last_printed = now_s
        else:
            return
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line of its own (a stage starting, a chaos action), above the live line."""
        prefix = "\r\x1b[2K" if self.tty else ""
        self.stream.write(prefix + text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
