"""A multirun is one MLflow parent with a child run per job, failures included."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # end to end: whole sweeps in subprocesses

ROOT = Path(__file__).resolve().parents[2]


def run_tl(*args, cwd):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "tl.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def sweep_runs(store):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("tl")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("tl.role") == "sweep"]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, kids


def common(tiny_data, store, tmp_path):
    return ["dataset=imagefolder", f"dataset.root={tiny_data}", "model.input_size=32",
            "model.pretrained=false", "trainer.epochs=2", "trainer.batch_size=4",
            "trainer.num_workers=0", f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / 'multirun'}"]


def test_a_sweep_logs_one_parent_with_a_child_per_job(tiny_data, store, tmp_path):
    out = run_tl("-m", "model=resnet18,mobilenet_v3_small_scratch",
                 "strategy=finetune,freeze,partial_freeze", *common(tiny_data, store, tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, parents, kids = sweep_runs(store)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 6
    assert {k.data.tags["mlflow.parentRunId"] for k in kids} == {parents[0].info.run_id}
    assert {(k.data.tags["tl.model"], k.data.tags["tl.strategy"]) for k in kids} == {
        (m, s) for m in ("resnet18", "mobilenet_v3_small") for s in ("finetune", "freeze", "partial_freeze")}
    for k in kids:
        assert k.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(k.info.run_id, "val_acc")] == [1, 2]
    assert "workflowType=machine_learning" in out.stdout


def test_a_failed_job_fails_its_run_and_the_parent_but_not_the_others(tiny_data, store, tmp_path):
    out = run_tl("-m", "model=resnet18", "strategy=partial_freeze", "strategy.frozen_stages=1,99",
                 *common(tiny_data, store, tmp_path), cwd=tmp_path)
    assert out.returncode != 0
    _, parents, kids = sweep_runs(store)
    status = {k.data.params.get("strategy.frozen_stages"): k for k in kids}
    assert status["1"].info.status == "FINISHED"
    assert status["99"].info.status == "FAILED"
    assert "frozen_stages=99 but this model has 5 stages" in status["99"].data.tags["tl.error"]
    assert parents[0].info.status == "FAILED"
    assert "FAILED: resnet18-partial_freeze-imagefolder" in out.stdout


def test_a_child_its_dead_process_left_running_ends_killed_and_resumable(shared_store, capsys):
    from tl.sweeps import sweep

    client = MlflowClient(shared_store)
    exp = client.create_experiment("dead-worker")
    parent = client.create_run(exp, tags={"tl.role": "sweep"}).info.run_id
    done = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
    client.set_terminated(done, "FINISHED")
    dead = client.create_run(exp, run_name="lost", tags={"mlflow.parentRunId": parent,
                                                          "tl.overrides": "model=vgg16"}).info.run_id
    assert not sweep.finish(sweep.Parent(shared_store, exp, parent))
    assert client.get_run(dead).info.status == "KILLED"
    assert client.get_run(parent).info.status == "FAILED"
    assert f"tl-train +resume={dead}" in client.get_run(dead).data.tags["tl.error"]
    assert f"KILLED: lost (run {dead})  [model=vgg16]" in capsys.readouterr().out
