"""A multirun job knows its sweep's parent run from its own config, wherever it runs: never
from a file that can vanish, and never silently as a run outside its sweep."""

import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from tests.helpers.sweeps import ROOT


def run_tl(*args, cwd):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "tl.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def common(tiny_data, store, tmp_path):
    return ["model=timm", "model.name=test_resnet,test_efficientnet,test_convnext", "model.pretrained=false",
            "model.input_size=32", "dataset=imagefolder", f"dataset.root={tiny_data}", "trainer.epochs=1",
            "trainer.batch_size=4", "trainer.num_workers=0", f"tracking.uri={store}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}"]


def all_runs(store):
    client = MlflowClient(store)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_jobs_log_under_their_parent_when_the_sweep_folder_is_gone(tiny_data, store, tmp_path):
    out = run_tl("-m", *common(tiny_data, store, tmp_path),
                 "+hydra.callbacks.rm._target_=tests.helpers.callbacks.RemoveSweepDir", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = all_runs(store)
    (parent,) = [r for r in runs if r.data.tags.get("tl.role") == "sweep"]
    kids = [r for r in runs if r is not parent]
    assert len(kids) == 3
    assert all(k.data.tags.get("mlflow.parentRunId") == parent.info.run_id for k in kids)
    assert f"3 of 3 runs finished (parent run {parent.info.run_id})" in out.stdout


def test_a_multirun_job_without_its_parent_is_an_error_not_a_top_level_run(tiny_data, store, tmp_path):
    # Without tl's sweep callback no parent exists, so no job can say which sweep it is of.
    out = run_tl("-m", *common(tiny_data, store, tmp_path), "~hydra.callbacks.mlflow_sweep", cwd=tmp_path)
    assert out.returncode != 0
    assert "is part of a multirun but carries no sweep parent run" in out.stderr
    assert all_runs(store) == []


def test_the_sweep_counts_every_job_it_launched_including_those_that_logged_no_run(shared_store, capsys):
    from tl.sweeps import sweep

    client = MlflowClient(shared_store)
    exp = client.create_experiment("counted")
    parent = client.create_run(exp, tags={"tl.role": "sweep"}).info.run_id
    for _ in range(2):
        client.set_terminated(client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id, "FINISHED")
    # Three jobs launched; one failed before it could log a run.
    assert not sweep.finish(sweep.Parent(shared_store, exp, parent, launched=3))
    run = client.get_run(parent)
    assert run.info.status == "FAILED"
    assert (run.data.metrics["jobs_launched"], run.data.metrics["runs_finished"], run.data.metrics["runs_failed"]) == (3, 2, 1)
    printed = capsys.readouterr().out
    assert f"2 of 3 runs finished (parent run {parent})" in printed
    assert "1 of the 3 jobs launched logged no run" in printed


def test_a_sweep_stopped_by_a_signal_ends_its_parent_killed(shared_store, capsys):
    from tl.sweeps import sweep

    client = MlflowClient(shared_store)
    exp = client.create_experiment("stopped")
    parent = client.create_run(exp, tags={"tl.role": "sweep"}).info.run_id
    client.set_terminated(client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id, "KILLED")
    assert not sweep.finish(sweep.Parent(shared_store, exp, parent, launched=4), stopped_by="SIGTERM")
    run = client.get_run(parent)
    assert run.info.status == "KILLED" and run.data.tags["tl.error_type"] == "SIGTERM"
    printed = capsys.readouterr().out
    assert "0 of 4 runs finished" in printed and "stopped by SIGTERM" in printed
    assert "3 of the 4 jobs launched logged no run: never started (the sweep was stopped)" in printed
