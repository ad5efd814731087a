"""Shared by the launcher tests: sweeps started as real processes logging to a served store,
waiting on what they log, and the processes a sweep left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import make_image_folder
from tests.helpers.rest import experiment, history, search

ROOT = Path(__file__).resolve().parents[2]
# Local Ray with the machine's 2 cores and a small object store; no dashboard processes.
RAY = ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
       "+hydra.launcher.ray.init.include_dashboard=false",
       "+hydra.launcher.ray.init.object_store_memory=80000000"]


def tl_env(mark: str | None = None) -> dict:
    # One torch thread in every process: a killed run's epochs and its resumed ones then sum
    # floats in the same order, wherever they run. TL_TEST_MARK tags every process of a sweep.
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if mark is not None:
        env["TL_TEST_MARK"] = mark
    return env


def job_args(data: Path, work: Path, server, experiment: str, epochs: int = 2, input_size: int = 32):
    # flush_seconds=0: each epoch lands as it ends, so a test can stop a job between two epochs
    # however fast the machine runs them.
    return ["tracking.flush_seconds=0", "model=timm", "model.pretrained=false", f"model.input_size={input_size}",
            "dataset=imagefolder", f"dataset.root={data}", f"trainer.epochs={epochs}",
            "trainer.batch_size=4", "trainer.num_workers=0", f"tracking.uri={server.url}",
            f"tracking.experiment={experiment}", f"hydra.sweep.dir={work / 'multirun'}"]


def run_tl(*args, cwd, timeout=900, mark=None):
    return subprocess.run([sys.executable, "-m", "tl.train", *args], cwd=cwd, env=tl_env(mark),
                          capture_output=True, text=True, timeout=timeout)


def start_tl(*args, cwd, mark):
    log = open(Path(cwd) / "sweep.log", "w")
    return subprocess.Popen([sys.executable, "-m", "tl.train", *args], cwd=cwd, env=tl_env(mark),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def epochs_logged(server, experiment_name: str) -> dict[str, int]:
    """run id -> epochs logged so far, for the experiment's child runs."""
    try:
        exp_id = experiment(server, experiment_name)
    except Exception:
        return {}
    kids = search(server, exp_id, "tags.`mlflow.parentRunId` != ''")
    return {k["info"]["run_id"]: len(history(server, k["info"]["run_id"], "val_acc")) for k in kids}


def marked_processes(mark: str) -> list[int]:
    """Live processes whose environment carries TL_TEST_MARK=mark (every process a sweep
    started inherits it: loky and Ray workers, Ray's own daemons, submitit's jobs)."""
    needle = f"TL_TEST_MARK={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def new_mark() -> str:
    return uuid.uuid4().hex


def kill_all(mark: str) -> None:
    """Test cleanup: nothing a failed test started may outlive it."""
    for pid in marked_processes(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def data_folder(root: Path, slow: bool = False) -> Path:
    """Tiny images; `slow` gives epochs of a few seconds, long enough to stop one midway."""
    if slow:
        return make_image_folder(root, n_train=40, n_val=8, size=40)
    return make_image_folder(root)
