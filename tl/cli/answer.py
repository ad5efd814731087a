"""`tl answer PATH --budget 30m [models=[...]] [strategies=[...]] [KEY=VALUE ...]`: which backbone
and which strategy work best on a folder of images, each strategy at its own tuned recipe.

It composes one sweep of `hydra/sweeper=answer` (screen -> race -> confirm, `tl.answer`) and runs
it as `python -m tl.train -m ...`, so every trial is a normal tl run under one parent run.
`--resume PARENT_RUN_ID` reuses every trial that earlier answer finished."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

from tl.errors import ConfigError

RENAMED = {"models": "hydra.sweeper.models", "strategies": "hydra.sweeper.strategies"}


def command(path: str, budget: str, overrides: list[str], resume: str | None, tracking_uri: str | None) -> list[str]:
    args = ["-m", "hydra/sweeper=answer", "dataset=imagefolder", f"dataset.root={Path(path).expanduser().resolve()}",
            f"hydra.sweeper.budget={budget}"]
    for o in overrides:
        key, _, value = o.partition("=")
        if key in RENAMED:
            value = value if value.startswith("[") else f"[{value}]"
            o = f"{RENAMED[key]}={value}"
        args.append(o)
    if resume:
        args.append(f"hydra.sweeper.resume={resume}")
    if tracking_uri:
        args.append(f"tracking.uri={tracking_uri}")
    return [sys.executable, "-m", "tl.train", *args]


def run(path: str, budget: str, overrides: list[str], resume: str | None = None,
        tracking_uri: str | None = None) -> int:
    """The sweep's exit status: 0 when every run finished, 1 when one failed (the answer still
    comes, without it), 2 on a wrong setting."""
    from tl.answer import budget as budgets

    if not Path(path).expanduser().is_dir():
        raise ConfigError(f"tl answer {path}: no such folder; give a folder of class folders "
                          "(PATH/train/<class>/*, PATH/val/<class>/*, or PATH/<class>/*)")
    budgets.parse(budget)  # refused here, before anything starts
    argv = command(path, budget, overrides, resume, tracking_uri)
    print("tl answer runs: " + " ".join(shlex.quote(a) for a in ["tl-train", *argv[3:]]), flush=True)
    proc = subprocess.Popen(argv)
    # A SIGTERM or SIGHUP for this process (a job scheduler, a closed ssh session) is the
    # sweep's: passed on, it ends its runs as KILLED; this process must not exit before it.
    before = {sig: signal.signal(sig, lambda signum, frame: proc.send_signal(signum))
              for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # the sweep got the same Ctrl-C: let it end its runs as KILLED
            code = proc.wait()
        return 128 - code if code < 0 else code  # killed by signal N before its handlers: 128 + N
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
