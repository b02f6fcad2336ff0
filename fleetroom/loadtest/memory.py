"""The whole stack's resident memory, read from /proc: every process of the run's process groups."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid_dir: Path) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None if the process is gone."""
    try:
        return (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _rss_bytes(pid_dir: Path) -> int:
    """Resident bytes of one process (its second field of statm), 0 if it is gone."""
    try:
        return int((pid_dir / "statm").read_text().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def stack_rss_bytes(group_ids: Iterable[int], own_pid: int | None = None) -> int:
    """Resident bytes summed over every live process in the process groups `group_ids` and `own_pid`.

    The supervisor starts each part as the leader of its own process group, so a group holds the
    part and whatever it started; `own_pid` is the harness itself (the observer runs in it).
    """
    groups = set(group_ids)
    total = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or fields[0] == "Z":
            continue
        if int(fields[2]) in groups or int(entry.name) == own_pid:  # field 2 after the name: the pgrp
            total += _rss_bytes(entry)
    return total
