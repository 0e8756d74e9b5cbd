"""How many CPU cores this process may use, for sizing threads and workers."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores in this process's affinity mask (taskset, a cluster's CPU set), not the machine's total."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
