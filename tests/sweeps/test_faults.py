"""Faults a sweep or run meets where jobs die as they do on shared machines: a dropped ssh
session (SIGHUP), two runs started in the same second, a dead worker; each stays local and
leaves no run lying about its status."""

import os
import signal
import subprocess
import sys
import time

import psutil
import yaml

from tests.helpers.rest import experiment, fetch_artifact, metrics, search, sweep_runs, tags
from tests.helpers.sweeps import (
    data_folder,
    epochs_logged,
    job_args,
    kill_all,
    marked_processes,
    new_mark,
    start_tl,
    tl_env,
    wait_for,
)


def gone_within(mark: str, seconds: float) -> list[str]:
    """The command lines of the processes carrying `mark` still alive after `seconds`."""
    deadline = time.monotonic() + seconds
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    return [" ".join(psutil.Process(p).cmdline()) for p in marked_processes(mark)]


def test_sighup_stops_a_sweep_like_sigterm_runs_and_parent_killed_and_exit_129(mlflow_server, tmp_path):
    name, mark = "sighup", new_mark()
    args = job_args(data_folder(tmp_path / "data", slow=True), tmp_path, mlflow_server, name, epochs=3, input_size=48)
    proc = start_tl("-m", "model.name=test_resnet", "trainer.seed=1,2", *args, cwd=tmp_path, mark=mark)
    try:
        wait_for(lambda: any(n >= 1 for n in epochs_logged(mlflow_server, name).values()), 300,
                 "the first job to log an epoch", proc)
        proc.send_signal(signal.SIGHUP)  # what a dropped ssh session sends
        code = proc.wait(timeout=300)
        left = gone_within(mark, 30)
    finally:
        kill_all(mark)
    log = (tmp_path / "sweep.log").read_text()
    assert code == 128 + signal.SIGHUP, log[-3000:]
    assert left == []
    sweep = sweep_runs(mlflow_server, name)
    assert sweep.parent["info"]["status"] == "KILLED"
    assert tags(sweep.parent)["tl.error_type"] == "SIGHUP"
    (kid,) = sweep.kids  # the second job never started
    assert kid["info"]["status"] == "KILLED"
    assert f"tl-train +resume={kid['info']['run_id']}" in tags(kid)["tl.error"]


def test_two_runs_started_in_the_same_second_get_output_folders_and_hydra_records_of_their_own(mlflow_server, tmp_path):
    name = "same-second"
    args = [a for a in job_args(data_folder(tmp_path / "data"), tmp_path, mlflow_server, name, epochs=1)
            if not a.startswith("hydra.sweep.dir")]
    at = int(time.time()) + 40  # both processes are up and composed well before then
    hold = ["+hydra.callbacks.start_at._target_=tests.helpers.callbacks.StartAt", f"+hydra.callbacks.start_at.at={at}"]
    procs = [subprocess.Popen([sys.executable, "-m", "tl.train", "model.name=test_resnet", f"trainer.seed={seed}",
                               *args, *hold], cwd=tmp_path, env=tl_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for seed in (1, 2)]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
    runs = search(mlflow_server, experiment(mlflow_server, name), "")
    assert len(runs) == 2
    folders = set()
    for run in runs:
        seed = [o for o in tags(run)["tl.overrides"].split() if o.startswith("trainer.seed=")]
        saved = yaml.safe_load(fetch_artifact(mlflow_server, run["info"]["run_id"], "hydra/overrides.yaml"))
        assert [o for o in saved if o.startswith("trainer.seed=")] == seed  # its own overrides
        hydra = yaml.safe_load(fetch_artifact(mlflow_server, run["info"]["run_id"], "hydra/hydra.yaml"))["hydra"]
        folders.add(hydra["runtime"]["output_dir"])
    assert len(folders) == 2
    assert len({f.rsplit("-", 2)[0] for f in folders}) == 1, f"not named in one second: {folders}"


def test_a_worker_killed_by_sigkill_fails_only_its_own_job_and_queued_jobs_still_run(mlflow_server, tmp_path):
    # As the kernel's OOM killer would: SIGKILL one loky worker mid-epoch, found by its run's pid.
    name, mark = "oom", new_mark()
    args = job_args(data_folder(tmp_path / "data", slow=True), tmp_path, mlflow_server, name, epochs=2, input_size=48)
    proc = start_tl("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.name=test_resnet",
                    "trainer.seed=1,2,3", *args, cwd=tmp_path, mark=mark)

    def a_running_job_one_epoch_in():
        logged = epochs_logged(mlflow_server, name)
        kids = search(mlflow_server, experiment(mlflow_server, name), "attributes.status = 'RUNNING'") if logged else []
        return next((k for k in kids if logged.get(k["info"]["run_id"], 0) >= 1
                     and tags(k).get("mlflow.parentRunId")), None)

    try:
        victim = wait_for(a_running_job_one_epoch_in, 300, "a job to log its first epoch", proc)
        os.kill(int(tags(victim)["tl.pid"]), signal.SIGKILL)
        code = proc.wait(timeout=600)
        left = gone_within(mark, 30)
    finally:
        kill_all(mark)
    log = (tmp_path / "sweep.log").read_text()
    assert code == 1, log[-3000:]
    assert left == [], f"processes of the sweep still alive 30 s after it exited: {left}"
    sweep = sweep_runs(mlflow_server, name)
    kids = {k["info"]["run_id"]: k for k in sweep.kids}
    dead = kids.pop(victim["info"]["run_id"])
    assert dead["info"]["status"] == "FAILED"
    assert "worker killed by SIGKILL — out of memory?" in tags(dead)["tl.error"]
    # The job running beside it and the one still queued both finish.
    assert sorted(k["info"]["status"] for k in kids.values()) == ["FINISHED", "FINISHED"], log[-3000:]
    assert sweep.parent["info"]["status"] == "FAILED"
    assert (metrics(sweep.parent)["jobs_launched"], metrics(sweep.parent)["runs_finished"]) == (3, 2)
