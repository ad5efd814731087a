"""Test-only Hydra callbacks for the sweep fault tests."""

from __future__ import annotations

import time

from hydra.experimental.callback import Callback


class StartAt(Callback):
    """Hold a run until the wall-clock second `at` begins: Hydra names the run's folder right
    after `on_run_start`, so two runs held to one second get their folder names in it."""

    def __init__(self, at: float):
        self.at = float(at)

    def on_run_start(self, config, **kwargs) -> None:
        time.sleep(max(0.0, self.at - time.time()) + 0.05)
