"""What this process knows about the sweep it launches: one registry, `SWEEP`.

The sweep callback (`tl.sweeps.sweep`) owns it: it begins it in `on_multirun_start`, adds the
parent run, and empties it when the sweep ends. The launchers only report to it (jobs handed
out, a worker that died), and a stop signal asks it to mark the parents stopping. One per
process, because Hydra runs one multirun per process; a job's own process never reads it (a
job learns its parent from its config, `tl.sweeps.sweep.parent_for_job`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tl.tracking import store


@dataclass
class Parent:
    uri: str
    experiment_id: str
    run_id: str
    launched: int = 0  # jobs handed to the launcher, whether or not they logged a run


@dataclass
class Sweep:
    parents: list[Parent] = field(default_factory=list)
    # Why this sweep must not launch: Hydra turns a callback's exception into a warning and
    # goes on, so the error is kept here and raised by tl's launchers (and in-process jobs).
    refused: Exception | None = None
    # (host, pid) of a job's worker that died -> why (a run there cannot close itself).
    dead_workers: dict[tuple[str, str], str] = field(default_factory=dict)

    def begin(self) -> None:
        self.parents.clear()
        self.refused = None
        self.dead_workers.clear()

    def refuse(self, error: Exception) -> None:
        self.refused = error

    def check_can_launch(self) -> None:
        """Raise the error that stopped `on_multirun_start`, before any job is launched."""
        if self.refused is not None:
            raise self.refused

    def launched(self, n: int) -> None:
        """A launcher handed `n` more jobs to its workers: the sweep's count covers them all."""
        for parent in self.parents:
            parent.launched += n

    def worker_died(self, host: str, pid: int, cause: str) -> None:
        self.dead_workers[(host, str(pid))] = cause

    def mark_stopping(self, signal_name: str) -> None:
        """Jobs that start after a stop signal see this on their parent and begin no run."""
        for parent in self.parents:
            store.client_for(parent.uri).set_tag(parent.run_id, "tl.stopping", signal_name)

    def take(self) -> Parent | None:
        """The next parent to end, removed from the registry; None when none is left."""
        return self.parents.pop() if self.parents else None


SWEEP = Sweep()
