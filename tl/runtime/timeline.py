"""Where a run's wall-clock time goes: its phases (imports, store, model, data or features,
epochs, diagnostics, exit), each logged as a `setup_seconds.<part>` metric.

`begin()` starts the trace of the run in this context; `part(name)` times a block into it from
any module without passing the trace through every call (a block outside a run is not timed).
What no part covers (logging the config and artifacts) is logged as `setup_seconds.other`."""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar


class Trace:
    def __init__(self):
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def metrics(self) -> dict[str, float]:
        """Each part's seconds, and `other`: the run's time (from `begin`) that no part covers."""
        traced = sum(v for k, v in self.seconds.items() if k != "imports")  # imports precede begin()
        other = max(time.perf_counter() - self.started - traced, 0.0)
        return {f"setup_seconds.{k}": v for k, v in {**self.seconds, "other": other}.items()}


_CURRENT: ContextVar[Trace | None] = ContextVar("tl_run_trace", default=None)


def begin() -> Trace:
    """A fresh trace for the run this context starts now."""
    trace = Trace()
    _CURRENT.set(trace)
    return trace


@contextmanager
def part(name: str):
    """Time the block into the current run's trace, as part `name` (added up if repeated)."""
    trace, start = _CURRENT.get(), time.perf_counter()
    try:
        yield
    finally:
        if trace is not None:
            trace.add(name, time.perf_counter() - start)


def current_metrics() -> dict[str, float]:
    """The current run's trace as metrics; none outside a run."""
    trace = _CURRENT.get()
    return {} if trace is None else trace.metrics()
