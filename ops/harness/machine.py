"""What machine a run is on, as the benchmark and chaos reports name it."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """Cores (and how many this process may use), CPU model, operating system."""
    return (f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {cpu_model()}, "
            f"{platform.system()} {platform.release()}")
