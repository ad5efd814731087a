"""SIGINT/SIGTERM/SIGHUP stop a run cleanly; a second signal ends the process at once.

SIGHUP is what a dropped ssh session sends: without a handler it killed the process outright and
left its run (or its sweep's parent run) RUNNING for good.

The first signal raises `Interrupted` in the main thread, at the next Python instruction,
unless a `deferred()` section is running: then it is raised when that section ends, so an
epoch's metrics and its checkpoint are written together or not at all. Stopping anywhere
else loses nothing, since a run resumes from the checkpoint of its last complete epoch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived. A KeyboardInterrupt, so code that lets Ctrl-C through lets it through."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class JobKilled(Exception):
    """A signal stopped this job of a parallel sweep. An ordinary exception, so the launcher
    records this job as failed and the other jobs go on."""


class _State:
    requested: int | None = None  # the first signal's number
    depth = 0  # nesting of deferred() sections
    installed = False


_state = _State()


def signal_name(e: BaseException) -> str:
    return signal.Signals(getattr(e, "signum", signal.SIGINT)).name


def exit_code(e: BaseException) -> int:
    """The shell's convention for a process ended by a signal."""
    return 128 + int(getattr(e, "signum", signal.SIGINT))


def _handler(signum, frame) -> None:
    if _state.requested is not None:
        # Second signal: the user means it. Die by the signal's default action, now.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _state.requested = signum
    if _state.depth == 0:
        raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals():
    """Install the handlers for the block; the previous ones come back afterwards.

    Outside the main thread signals cannot be caught, and the block runs without them.
    """
    if threading.current_thread() is not threading.main_thread() or _state.installed:
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _state.requested, _state.depth, _state.installed = None, 0, True
    try:
        for s in SIGNALS:
            signal.signal(s, _handler)
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _state.requested, _state.depth, _state.installed = None, 0, False


@contextlib.contextmanager
def deferred():
    """A section a first signal does not interrupt; it stops the run when the section ends."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
    if _state.depth == 0 and _state.requested is not None and _state.installed:
        raise Interrupted(_state.requested)
