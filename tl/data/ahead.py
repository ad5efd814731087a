"""Check a run's image files in a forked child while the run opens its store.

A run's first seconds are single-threaded: importing MLflow and opening its store (about
1.7 s), then scanning the dataset, decoding every file once to check it, and hashing its
bytes for the data's identity (about 1 s for the tutorial's 398 JPEGs). The check's and the
hash's results are kept in the user's cache (`imagefiles.checked`, `identity.content_digest`),
so a child forked as the run starts can compute them on a free core while the parent opens
the store; the run's own scan then reads them. Nothing else passes between the two: a
child that fails, or is slower, costs the run nothing but the wait for what it was doing.

Only tl's commands check ahead (as only they read the machine's load), and only with a core
to spare: beside a busy neighbour, or with one usable CPU, the child would take the parent's.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from tl.runtime import neighbours
from tl.runtime.paths import resolve

log = logging.getLogger(__name__)

STALL_SECONDS = 5.0  # a child that used no CPU for this long is stuck (a lock held at fork): killed
FOLDER_DATASETS = ("imagefolder", "hymenoptera", "digits")
_state: dict = {}


def root_on_disk(dataset_cfg) -> Path | None:
    """The dataset's folder if it is one that is already on disk (nothing to download or write)."""
    if dataset_cfg.get("name") not in FOLDER_DATASETS or dataset_cfg.get("root") in (None, "", "???"):
        return None
    try:
        root = resolve(dataset_cfg.root)
    except Exception:  # a bad root is the run's own error to report, with its run
        return None
    if dataset_cfg.name == "digits" and not any(root.glob(".tl-digits-*px")):
        return None
    return root if root.is_dir() else None


def start(dataset_cfg, spare_cores: int | None = None) -> bool:
    """Fork the child that checks the dataset's files; False when not worth it (no spare core,
    not a folder on disk, or not this process's first run: a sweep's later runs find the
    first one's results)."""
    if "tried" in _state or not hasattr(os, "fork"):
        return False
    _state["tried"] = True
    spare = _spare_cores() if spare_cores is None else spare_cores
    root = root_on_disk(dataset_cfg)
    if spare < 1 or root is None:
        return False
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _die_with(parent)
        _check_and_exit(dataset_cfg, root)
    _state.update(pid=pid, started=time.monotonic())
    return True


def _spare_cores() -> int:
    from tl.runtime.machine import usable_cpus

    free = neighbours.free_cores(usable_cpus())
    return 0 if free is None else free - 1  # None: not a command's process (a library call, a test)


def _die_with(parent: int) -> None:
    """A parent killed outright (SIGKILL, the OOM killer) takes the child with it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child ends with its check
        pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _check_and_exit(dataset_cfg, root: Path) -> None:
    code = 1
    try:
        _quiet()
        from tl.data import datasets, identity

        datasets.scan(dataset_cfg, root)  # the run's own scan: the same files, the same cache entries
        identity.content_digest(root)
        code = 0
    except BaseException:  # the run scans again and reports what is wrong, with its run
        pass
    finally:
        os._exit(code)  # no atexit handlers, no flush of the parent's buffers


def _quiet() -> None:
    """The run reports the data; the child says nothing, and a Ctrl-C is the parent's to handle.
    It keeps to one core: the other is the parent's, which would otherwise wait for the
    child's second thread (the check decodes on two). `wait` gives it every core back."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[-1:])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.disable(logging.CRITICAL)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def wait() -> bool:
    """Before the run's own scan: let the child finish what it is checking (the run would do
    the same work meanwhile). True when it finished its check."""
    pid = _state.pop("pid", None)
    if pid is None:
        return False
    started = _state.pop("started")
    try:  # the parent waits now: the child may use its cores
        os.sched_setaffinity(pid, os.sched_getaffinity(0))
    except OSError:  # already gone
        pass
    last_cpu, last_progress = _cpu_ticks(pid), time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            log.debug("check ahead: %s after %.2f s", "done" if ok else "failed", time.monotonic() - started)
            return ok
        cpu = _cpu_ticks(pid)
        if cpu != last_cpu:
            last_cpu, last_progress = cpu, time.monotonic()
        elif time.monotonic() - last_progress > STALL_SECONDS:
            log.debug("check ahead: no progress for %.0f s, stopped", STALL_SECONDS)
            _kill(pid)
            return False
        time.sleep(0.01)


def stop() -> None:
    """Kill the child, if any, and reap it (a run that fails before its scan leaves none)."""
    pid = _state.pop("pid", None)
    _state.pop("started", None)
    if pid is not None:
        _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None
