"""SIGTERM to the process that launched a sweep, mid-epoch, stops all of the sweep: with the
joblib launcher (loky workers) and with the Ray launcher. No process of the sweep lives on,
every child run and the parent end KILLED, the launcher exits 143, and a stopped child resumes
to the same per-epoch numbers as a run never stopped."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.rest import history, metrics, sweep_runs, tags
from tests.helpers.sweeps import (
    RAY,
    data_folder,
    epochs_logged,
    job_args,
    kill_all,
    marked_processes,
    new_mark,
    run_tl,
    start_tl,
    tl_env,
    wait_for,
)

LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "ray": RAY,
}


def stop_mid_epoch(server, tmp_path, launcher: str):
    """Start a 4-job sweep on 2 workers, SIGTERM its launching process once both running jobs
    have logged an epoch; return the sweep's exit code and its runs."""
    name = f"stop-{launcher}"
    mark = new_mark()
    args = job_args(data_folder(tmp_path / "data", slow=True), tmp_path, server, name, epochs=3, input_size=48)
    proc = start_tl("-m", *LAUNCHERS[launcher], "model.name=test_resnet", "trainer.seed=1,2,3,4", *args,
                    cwd=tmp_path, mark=mark)
    try:
        wait_for(lambda: sum(1 for n in epochs_logged(server, name).values() if n >= 1) >= 2, 300,
                 "two jobs to log their first epoch", proc)
        running = marked_processes(mark)
        assert len(running) >= 3, running  # the launcher and at least two workers carry the mark
        at_signal = epochs_logged(server, name)
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=300)
        # Nothing of the sweep may be alive 30 s later.
        deadline = time.monotonic() + 30
        while marked_processes(mark) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = marked_processes(mark)
    finally:
        kill_all(mark)
    log = (tmp_path / "sweep.log").read_text()
    return code, left, log, sweep_runs(server, name), at_signal


@pytest.mark.parametrize("launcher", ["joblib", "ray"])
def test_sigterm_to_the_launcher_stops_every_job_and_ends_every_run_killed(mlflow_server, tmp_path, launcher):
    code, left, log, sweep, at_signal = stop_mid_epoch(mlflow_server, tmp_path, launcher)
    assert code == 128 + signal.SIGTERM, log[-3000:]
    assert left == [], f"processes of the sweep still alive 30 s after it exited: {left}"

    assert sweep.parent["info"]["status"] == "KILLED"
    assert tags(sweep.parent)["tl.error_type"] == "SIGTERM"
    assert len(sweep.all) == len(sweep.kids) + 1  # no job logged outside the sweep
    stopped = [k for k in sweep.kids if k["info"]["status"] != "FINISHED"]
    assert stopped, "the signal came mid-run: some job must have been stopped"
    for kid in stopped:
        assert kid["info"]["status"] == "KILLED"
        assert f"tl-train +resume={kid['info']['run_id']}" in tags(kid)["tl.error"]
    assert metrics(sweep.parent)["jobs_launched"] == 4
    assert "stopped by SIGTERM" in log

    # No queued job started after the signal: every run that exists began before it, and no
    # stopped run logged an epoch past the one in progress.
    # Known gap on Ray (docs/clusters-and-server.md): `ray.cancel` may not reach a task's training
    # loop, which then trains on until the stop's grace period kills it; the run still ends KILLED.
    for kid in stopped if launcher != "ray" else []:
        logged = len(history(mlflow_server, kid["info"]["run_id"], "val_acc"))
        assert logged <= at_signal.get(kid["info"]["run_id"], 0) + 1

    # A stopped child resumes from its checkpoint to the very numbers of an uninterrupted run:
    # `tl reproduce` trains its config anew, unstopped, and compares every epoch exactly.
    run_id = stopped[0]["info"]["run_id"]
    again = run_tl(f"+resume={run_id}", f"tracking.uri={mlflow_server.url}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [s for s, _ in history(mlflow_server, run_id, "val_acc")] == [1, 2, 3]
    check = subprocess.run([sys.executable, "-m", "tl", "reproduce", run_id, "--tracking-uri", mlflow_server.url],
                           cwd=tmp_path, env=tl_env(), capture_output=True, text=True, timeout=900)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert "every per-epoch metric is identical" in check.stdout
