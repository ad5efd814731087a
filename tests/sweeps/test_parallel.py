"""Parallel sweeps (Hydra's joblib launcher) against the embedded SQLite store: nothing lost,
failures and kills confined to their own runs, and a killed run resumable to the end."""

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import make_image_folder
from tests.helpers.runs import CURVES
from tl.tracking import store as mlflow_store
from tl.tracking.readback import history

pytestmark = pytest.mark.slow  # end to end: whole sweeps in subprocesses

ROOT = Path(__file__).resolve().parents[2]
PER_EPOCH = (*CURVES, "epoch_seconds", "images_per_second", "train_images_per_second")
SUMMARY = ("best_val_acc", "best_epoch", "train_seconds", "skipped_files")


def run_tl(*args, cwd):
    # One thread everywhere: the killed run's epochs run in a sweep worker and, after the
    # resume, in another process; equal thread counts keep their float sums in the same order.
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "tl.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def kill_job(num: int, batches: int) -> list[str]:
    """Test-only Hydra callback: SIGTERM job `num`'s own process during training batch `batches`."""
    return ["+hydra.callbacks.kill._target_=tests.helpers.callbacks.SigtermMidEpoch",
            f"+hydra.callbacks.kill.job_num={num}", f"+hydra.callbacks.kill.batches={batches}"]


def test_a_parallel_sweep_with_a_failing_and_a_killed_job_loses_nothing(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    # Jobs 0 and 1 are twins: job 1 runs uninterrupted, job 0 gets SIGTERM in epoch 2 (16
    # images in batches of 4: batch 6). Job 5 names no model and fails.
    out = run_tl(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "model=timm", "model.name=test_resnet,test_resnet,test_efficientnet,test_convnext,test_byobnet,no_such_model",
        "model.pretrained=false", "model.input_size=32", "dataset=imagefolder",
        f"dataset.root={make_image_folder(tmp_path / 'data')}", "trainer.epochs=3",
        "trainer.batch_size=4", "trainer.num_workers=1", f"tracking.uri={store}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}", *kill_job(0, batches=6), cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-3000:]

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tl").experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("tl.role") == "sweep"]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 7 and len(kids) == 6
    assert Counter(k.info.status for k in kids) == {"FINISHED": 4, "FAILED": 1, "KILLED": 1}
    assert parent.info.status == "FAILED"
    assert (parent.data.metrics["runs_finished"], parent.data.metrics["runs_failed"]) == (4, 2)

    (failed,) = [k for k in kids if k.info.status == "FAILED"]
    assert failed.data.tags["tl.error_type"] == "ConfigError"
    assert "model.name='no_such_model' is not a timm model" in failed.data.tags["tl.error"]
    (killed,) = [k for k in kids if k.info.status == "KILLED"]
    assert killed.data.tags["tl.error_type"] == "SIGTERM"
    assert f"FAILED: no_such_model-finetune-imagefolder (run {failed.info.run_id})" in out.stdout
    assert f"KILLED: test_resnet-finetune-imagefolder (run {killed.info.run_id})" in out.stdout
    assert f"tl-train +resume={killed.info.run_id}" in out.stdout

    # Every param of every run: the whole config, and (once training began) the data facts.
    finished = [k for k in kids if k.info.status == "FINISHED"]
    config = OmegaConf.load(client.download_artifacts(finished[0].info.run_id, "config.yaml"))
    config_keys = set(mlflow_store.flatten(config))
    assert all(config_keys <= set(k.data.params) for k in kids)
    assert len({len(k.data.params) for k in [*finished, killed]}) == 1
    assert all(k.data.params["runtime.num_workers"] == "1" for k in finished)
    for k in finished:
        for key in PER_EPOCH:
            assert [s for s, _ in history(client, k.info.run_id, key)] == [1, 2, 3], (k.info.run_name, key)
        assert set(SUMMARY) <= set(k.data.metrics)
    assert [s for s, _ in history(client, killed.info.run_id, "val_acc")] == [1]

    # The killed run resumes from the command line, to the twin's numbers exactly.
    again = run_tl(f"+resume={killed.info.run_id}", f"tracking.uri={store}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert client.get_run(killed.info.run_id).info.status == "FINISHED"
    (twin,) = [k for k in finished if k.data.tags["tl.model"] == "test_resnet"]
    for key in CURVES:
        assert history(client, killed.info.run_id, key) == history(client, twin.info.run_id, key), key


def test_a_run_stopped_by_sigterm_exits_143_and_ends_killed(tiny_data, store, tmp_path):
    out = run_tl("dataset=imagefolder", f"dataset.root={tiny_data}", "model=timm",
                 "model.name=test_resnet", "model.pretrained=false", "model.input_size=32",
                 "trainer.epochs=3", "trainer.batch_size=4", "trainer.num_workers=0",
                 f"tracking.uri={store}", *kill_job(0, batches=2), cwd=tmp_path)
    assert out.returncode == 128 + signal.SIGTERM, out.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    assert run.info.status == "KILLED"
    assert f"stopped by SIGTERM; resume with: tl-train +resume={run.info.run_id}" in out.stdout
