"""What other processes leave of this process's CPUs, read once, at the first run's start.

Beside a CPU-bound neighbour, an op split over every core waits at each of its barriers for
the thread the neighbour displaced. Measured on 2 cores beside a 2-thread matmul loop, a
resnet18 partial_freeze epoch took 27.6 s with 2 threads and 12.2 s with 1 (alone: 7.1 s and
8.9 s): fewer threads than cores is the fair share. What the others use is read from the
kernel's per-CPU counters (/proc/stat) over the window from tl's entry (`mark`, before torch
loads) to the first run's start, less this process's own CPU time in it: the seconds the
imports take anyway, nothing slept for it. Only a process whose entry marked decides so (a
test or a library calling `train()` keeps every usable CPU), and only once: the runs of an
in-process sweep all use the same count.
"""

from __future__ import annotations

import math
import os
import time

MIN_WINDOW = 0.5  # seconds: shorter says nothing
_state: dict = {}


def _affinity() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return set(range(os.cpu_count() or 1))


def _busy_seconds(cpus: set[int]) -> float | None:
    """Non-idle seconds of `cpus` since boot, every process's."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        v = [int(x) for x in values[:8]]  # user nice system idle iowait irq softirq steal
        ticks += sum(v) - v[3] - (v[4] if len(v) > 4 else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def mark() -> None:
    """Start the window (tl's commands call this first; a later call keeps the first mark)."""
    if "mark" in _state:
        return
    busy = _busy_seconds(_affinity())
    if busy is not None:
        _state["mark"] = (time.monotonic(), busy, _own_seconds())


def others() -> float | None:
    """Cores' worth of this process's CPUs that other processes used in the window, read once
    per process (later calls return the first answer); None without a mark or a window."""
    if "others" in _state:
        return _state["others"]
    start = _state.get("mark")
    busy = _busy_seconds(_affinity()) if start is not None else None
    value = None
    if start is not None and busy is not None and time.monotonic() - start[0] >= MIN_WINDOW:
        wall = time.monotonic() - start[0]
        value = max(0.0, (busy - start[1]) - (_own_seconds() - start[2])) / wall
    _state["others"] = value
    return value


def free_cores(usable: int) -> int | None:
    """`usable` CPUs less those other processes took in the window; None without a reading. A
    core counts as taken when others kept it 75% busy: a browser's bursts leave every core."""
    busy = others()
    return None if busy is None else usable - math.floor(busy + 0.25)
