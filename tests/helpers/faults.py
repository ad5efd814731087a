"""Test-only: `python -m tests.helpers.faults OVERRIDES...` runs `tl.train` as `tl-train` does,
with faults injected from the environment:

- `TL_TEST_KILL_BEFORE=WRITE:EPOCH` SIGKILLs the process just before that write of an epoch's
  commit (`stage_best`, `write_last`, `promote_best`, `log_steps`), i.e. between two writes;
- `TL_TEST_WRITES=PATH` appends each commit write, as `WRITE:EPOCH`, to PATH as it happens;
- `TL_TEST_READONLY_STORE=1` opens every SQLite database read-only, as on a read-only folder
  (a test running as root cannot make one with file modes).

`faulty_run` starts it, in its own process, for a test.
"""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import sqlite3.dbapi2
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def recipe(data: Path, uri: str) -> list[str]:
    """The run the commit tests kill and resume: 2 epochs from scratch in fp32, the lr changing each epoch."""
    return ["dataset=imagefolder", f"dataset.root={data}", "model=resnet18", "model.pretrained=false",
            "model.input_size=32", "trainer.batch_size=4", "trainer.num_workers=0", "trainer.epochs=2",
            "trainer.precision=fp32", "scheduler=step", "scheduler.decay_epochs=1", f"tracking.uri={uri}",
            # every epoch its own commit, however fast: the faults count the writes
            "tracking.flush_seconds=0"]


def faulty_run(tmp: Path, overrides: list[str], **env) -> subprocess.CompletedProcess:
    """`tl-train` in its own process, with this module injecting `env`'s faults."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                "TL_TEST_WRITES": str(tmp / "writes.txt"), **env}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "tests.helpers.faults", *overrides,
                           f"hydra.run.dir={tmp / 'out'}"], cwd=tmp, env=full_env, capture_output=True,
                          text=True, timeout=900)


def _record(point: str) -> None:
    path = os.environ.get("TL_TEST_WRITES")
    if path:
        with open(path, "a") as f:
            f.write(point + "\n")
    if os.environ.get("TL_TEST_KILL_BEFORE") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _epoch_of_payload(args) -> int:
    return int(args[0]["epoch"])


def _wrap(owner, name: str, epoch_of) -> None:
    real = getattr(owner, name)

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        epoch = epoch_of(args)
        if epoch is not None:
            _record(f"{name}:{epoch}")
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


def install() -> None:
    from tl.runtime.io import load_tensors
    from tl.tracking import store
    from tl.training import checkpoints

    ckpts = checkpoints.RunCheckpoints
    _wrap(ckpts, "stage_best", lambda a: _epoch_of_payload(a[1:]))
    _wrap(ckpts, "write_last", lambda a: _epoch_of_payload(a[1:]))
    _wrap(ckpts, "promote_best", lambda a: _epoch_of_payload([load_tensors(a[0].dir / checkpoints.NEXT)]))

    def epochs_logged(args):  # the per-epoch rows only, not step-0 facts or the summaries
        steps = [step for step, _, metrics in args[2] if "val_acc" in metrics]
        return max(steps) if steps else None

    _wrap(store, "log_steps", epochs_logged)
    if os.environ.get("TL_TEST_READONLY_STORE"):
        real = sqlite3.connect

        def read_only(database, *args, **kwargs):
            kwargs.pop("uri", None)
            return real(f"file:{os.path.abspath(database)}?mode=ro", *args, uri=True, **kwargs)

        sqlite3.connect = sqlite3.dbapi2.connect = read_only  # SQLAlchemy connects through dbapi2


def main() -> None:
    install()
    from tl.train import main as tl_main

    sys.argv[0] = "tl-train"
    tl_main()


if __name__ == "__main__":
    main()
