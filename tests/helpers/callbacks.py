"""Test-only Hydra callbacks, injected with `+hydra.callbacks.NAME._target_=tests.helpers.callbacks.X`:

- `SigtermMidEpoch` stops one job with a real SIGTERM in the middle of an epoch, through tl's
  own signal handling (`sigterm_after` does the same in-process);
- `RemoveSweepDir` deletes the sweep folder as each job starts;
- `StartAt` holds a run until a given wall-clock second.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from tl.bench.trials import at_training_batch


def _install(batches: int):
    return at_training_batch(batches, lambda: os.kill(os.getpid(), signal.SIGTERM))


@contextlib.contextmanager
def sigterm_after(batches: int):
    """SIGTERM this process during training batch number `batches` (counted across epochs)."""
    handle = _install(batches)
    try:
        yield
    finally:
        handle.remove()


class SigtermMidEpoch(Callback):
    """SIGTERM the process of sweep job `job_num` during its training batch `batches`."""

    def __init__(self, job_num: int, batches: int):
        self.job_num, self.batches, self._handle = job_num, batches, None

    def on_job_start(self, config, **kwargs) -> None:
        # A single run (not -m) has no job number: it counts as job 0.
        num = 0 if OmegaConf.is_missing(config.hydra.job, "num") else config.hydra.job.num
        if num == self.job_num:
            self._handle = _install(self.batches)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class RemoveSweepDir(Callback):
    """Delete the sweep folder as each job starts, as when it lived on a scratch disk that was
    cleaned mid-sweep: jobs must still know their parent run."""

    def on_job_start(self, config, **kwargs) -> None:
        shutil.rmtree(config.hydra.sweep.dir, ignore_errors=True)


class StartAt(Callback):
    """Hold a run until the wall-clock second `at` begins: Hydra names the run's folder right
    after `on_run_start`, so two runs held to one second get their folder names in it."""

    def __init__(self, at: float):
        self.at = float(at)

    def on_run_start(self, config, **kwargs) -> None:
        time.sleep(max(0.0, self.at - time.time()) + 0.05)
