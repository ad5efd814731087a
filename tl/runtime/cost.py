"""The whole cost of a run, not only its epochs: from the start of the job's process (or, in a
sweep, of the job itself) to the run's end, so decoding, the frozen backbone's pass, training,
evaluation and logging all count."""

from __future__ import annotations

import os
import time

_IMPORTED = time.perf_counter()


def process_start() -> float:
    """This process's start on the `time.perf_counter` clock. On Linux from /proc (both the
    process start and the uptime count from boot); elsewhere, when tl was first imported."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - started
    except (OSError, ValueError, IndexError):
        return _IMPORTED
    now = time.perf_counter()
    return now - age if 0 <= age < 10 * 24 * 3600 else _IMPORTED


def rate_names(on_features: bool) -> tuple[str, str]:
    """Per-epoch rate metrics: images only where images were processed; a head trained on
    cached features logs feature vectors per second, which no image rate can be compared to."""
    unit = "features" if on_features else "images"
    return f"{unit}_per_second", f"train_{unit}_per_second"
