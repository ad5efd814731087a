"""Waiting for a sweep's jobs, and stopping every job the sweep started on a signal.

Without this, SIGTERM to a joblib sweep's main process left its loky workers training and
starting queued jobs as orphans, and the parent run RUNNING (loky#360, joblib#945); Ray's and
submitit's launchers never cancel their tasks (hydra#1884). While a launcher waits for its
jobs (`tl.sweeps.launch.wait_for_jobs`), `Stop` turns the first SIGINT/SIGTERM/SIGHUP into:
1. the sweep's parent is marked stopping, so a queued job that starts now begins no run;
2. `cancel()`: each running job is asked to stop (SIGTERM to its worker, `ray.cancel` to a Ray
   task, `scancel` to a SLURM job), and ends its run KILLED at once, saying how to resume it;
3. the launcher keeps waiting, for `STOP_GRACE_SECONDS`, until every job has returned; then
   `Interrupted` is raised, so the sweep ends as a stopped single run does (exit 128 + the
   signal's number) and the parent is closed KILLED.
A second signal forces: `force()` kills what is left, and this process dies by the signal.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Callable

import psutil

from tl.runtime import signals
from tl.sweeps.state import SWEEP

log = logging.getLogger(__name__)

# How long a stopped sweep waits for its jobs to close their runs before killing them.
STOP_GRACE_SECONDS = 60


class Stop:
    def __init__(self, cancel: Callable[[], object], force: Callable[[], object]):
        self._cancel, self._force = cancel, force
        self.signum: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: the user means now
            log.warning("second %s: killing the sweep's jobs", signal.Signals(signum).name)
            self.force()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        name = signal.Signals(signum).name
        log.warning("%s: stopping every job of the sweep (a second signal kills them)", name)
        try:
            SWEEP.mark_stopping(name)
        except Exception:  # the store may be what failed; stopping the jobs matters more
            log.exception("could not mark the sweep's parent run as stopping")
        self._safely(self._cancel)

    def _safely(self, fn) -> None:
        try:
            fn()
        except Exception:
            log.exception("while stopping the sweep's jobs")

    def force(self) -> None:
        self._safely(self._force)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.getsignal(s) for s in signals.SIGNALS}
            for s in signals.SIGNALS:
                signal.signal(s, self._handler)
        return self

    def __exit__(self, exc_type, exc, tb):
        for s, h in self._previous.items():
            signal.signal(s, h)
        if self.signum is not None:
            # Whatever the launcher raised on the way, the sweep ends as stopped by the signal.
            raise signals.Interrupted(self.signum) from exc
        return False


def signal_tree(pid: int, signum: int, children_too: bool = True) -> None:
    """Send `signum` to `pid` and (when `children_too`) every process below it (its DataLoader
    workers, a submitit task)."""
    try:
        root = psutil.Process(pid)
        tree = [root] + (root.children(recursive=True) if children_too else [])
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.send_signal(signum)
        except psutil.NoSuchProcess:
            pass
