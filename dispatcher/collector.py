"""The garbage collector of a process that holds a million cars.

CPython's default thresholds (700, 10, 10) run a young collection every 700 new containers
and a full one each time the heap grew by a quarter; with a registry, an offer book and roster
blocks of a million cars, those collections found nothing to free and took about 40 % of the
time spent ingesting frames (bench/dispatcher_ingest.py). Reference counting frees almost
everything the dispatcher drops; the collector is only for cycles, so it runs far less often.
"""

from __future__ import annotations

import gc
from typing import Final

GC_THRESHOLDS: Final = (100_000, 50, 100)


def tune_collector() -> None:
    """Collect cycles far less often than CPython's default (see the module's docstring)."""
    gc.set_threshold(*GC_THRESHOLDS)
