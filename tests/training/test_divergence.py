"""A loss that becomes NaN or infinite fails the run at that epoch, saying so and what to
change; the epochs before it stay logged, the diverged one is neither logged nor checkpointed."""

import math
from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg
from tests.helpers.runs import base, only_run, runs, tl_train
from tl.tracking.readback import history
from tl.train import train
from tl.training import checkpoints, loop


def test_a_nan_loss_in_epoch_2_fails_the_run_there_keeping_epoch_1(fast_overrides, store, monkeypatch):
    real, calls = loop.train_one_epoch, []

    def diverging(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        return replace(result, loss=math.nan) if len(calls) == 2 else result

    monkeypatch.setattr(loop, "train_one_epoch", diverging)
    with pytest.raises(loop.Diverged, match=r"the loss diverged at epoch 2 \(train loss nan"):
        train(compose_cfg(*fast_overrides, "trainer.epochs=3"))
    client, (run,) = runs(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["tl.error_type"] == "Diverged"
    assert "epoch 2" in run.data.tags["tl.error"] and "lower optimizer.lr" in run.data.tags["tl.error"]
    assert [s for s, _ in history(client, run.info.run_id, "val_acc")] == [1]
    last = checkpoints.read(checkpoints.local_dir(run.info.artifact_uri) / "checkpoints" / "last.pt")
    assert last["epoch"] == 1


def test_an_infinite_val_loss_fails_the_run_too(fast_overrides, store, monkeypatch):
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: replace(real(*a, **k), loss=math.inf))
    with pytest.raises(loop.Diverged, match=r"epoch 1 .*val loss inf.*no epoch was logged"):
        train(compose_cfg(*fast_overrides))
    assert MlflowClient(store).search_runs([MlflowClient(store).get_experiment_by_name("tl").experiment_id])[0] \
        .info.status == "FAILED"


def test_too_high_a_learning_rate_is_one_line_naming_the_fix_and_exit_2(tmp_path, store):
    out = tl_train(*base(tmp_path, store), "optimizer.lr=1e12", "trainer.epochs=2", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("tl-train: error: the loss diverged at epoch 1")
    assert "lower optimizer.lr (this phase: 1e+12)" in last
    assert "Traceback" not in out.stderr
    run = only_run(store)
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["tl.error"]
