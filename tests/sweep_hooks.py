"""Test-only Hydra callbacks for sweeps."""

from __future__ import annotations

import shutil

from hydra.experimental.callback import Callback


class RemoveSweepDir(Callback):
    """Delete the sweep folder as each job starts, as when it lived on a scratch disk that was
    cleaned mid-sweep: jobs must still know their parent run."""

    def on_job_start(self, config, **kwargs) -> None:
        shutil.rmtree(config.hydra.sweep.dir, ignore_errors=True)
