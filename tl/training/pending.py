"""An epoch's record (its metrics, `last.pt`, and `best.pt` when it improved) written together,
and for fast epochs several epochs' records in one write.

A head on cached features runs an epoch in milliseconds, less than one store transaction and
one synced checkpoint file take. So an epoch's record waits (its checkpoints as a snapshot)
until `tracking.flush_seconds` have passed since the last write, the last epoch ends, or the
loop stops early (a signal, an error): then every waiting epoch lands, metrics in one
`log_batch`, each checkpoint file once. Epochs slower than the interval write as they end.
A run killed outright (SIGKILL) loses at most that interval's epochs, together with their
checkpoint: its resume point stays consistent with its logged curves.

The writes are ordered so that a stop between any two of them loses nothing and logs nothing
twice (see `tl.training.checkpoints`): stage the new best, write `last.pt` with the metric
rows of every epoch so far (the commit), promote the best, log the metrics. A resume logs the
rows the store lacks from `last.pt`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tl.tracking import store
from tl.training.checkpoints import RunCheckpoints


@dataclass
class Pending:
    client: object
    run_id: str
    ckpts: RunCheckpoints
    interval: float
    steps: list = field(default_factory=list)  # (epoch, timestamp ms, metrics)
    best: dict | None = None
    last: dict | None = None
    since: float = field(default_factory=time.perf_counter)
    rows: list = field(default_factory=list)  # every epoch's (epoch, timestamp ms, metrics), for last.pt

    def add(self, epoch: int, metrics: dict, best, last, final: bool) -> None:
        """Record a finished epoch. `best`/`last`: zero-argument callables giving the
        checkpoint payloads (`best` None when the epoch did not improve, or checkpoints are
        off); they are called now, and snapshotted when the write waits."""
        self.steps.append((epoch, store.now_ms(), metrics))
        self.rows.append(self.steps[-1])
        due = final or time.perf_counter() - self.since >= self.interval
        take = (lambda p: p) if due else RunCheckpoints.snapshot
        if best is not None:
            self.best = take(best())
        self.last = take(last())
        if due:
            self.flush()

    def flush(self) -> None:
        """Write what waits, in commit order. A failed write stops here: what follows it is
        not written, so the store never shows an epoch that `last.pt` does not hold."""
        best, last, steps = self.best, self.last, self.steps
        self.steps, self.best, self.last = [], None, None  # an error below must not write them twice
        if best is not None:
            self.ckpts.stage_best(best)
        if last is not None:
            self.ckpts.write_last(last, list(self.rows))
        if best is not None:
            self.ckpts.promote_best()
        if steps:
            store.log_steps(self.client, self.run_id, steps)
        self.since = time.perf_counter()
