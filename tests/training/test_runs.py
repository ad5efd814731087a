"""A single run logs its config, curves, timings and artifacts, and reproduces exactly."""

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg
from tests.helpers.runs import CURVES
from tl.tracking.readback import history
from tl.train import train


def only_run(store):
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_a_run_logs_params_tags_curves_and_artifacts(fast_overrides, store):
    best = train(compose_cfg(*fast_overrides, "strategy=freeze")).best_val_acc
    client, run = only_run(store)
    assert run.info.status == "FINISHED"
    p, t, m = run.data.params, run.data.tags, run.data.metrics
    assert p["model.name"] == "resnet18" and p["strategy.name"] == "freeze" and p["trainer.epochs"] == "2"
    assert p["runtime.precision"] in ("fp32", "bf16") and "runtime.cpu" in p
    assert int(p["params.trainable"]) == 512 * 2 + 2 and int(p["params.frozen"]) > 10_000_000
    assert t["tl.model"] == "resnet18" and t["tl.strategy"] == "freeze" and "tl.git_commit" in t
    for key in (*CURVES, "epoch_seconds", "features_per_second"):
        assert [s for s, _ in history(client, run.info.run_id, key)] == [1, 2], key
    assert m["best_val_acc"] == pytest.approx(best)
    assert best == max(v for _, v in history(client, run.info.run_id, "val_acc"))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints"} <= artifacts


def test_two_identical_runs_give_identical_metrics(fast_overrides, store):
    cfg = compose_cfg(*fast_overrides, "strategy=partial_freeze")
    train(cfg)
    train(cfg)
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    assert len(runs) == 2
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        a, b = (history(client, r.info.run_id, key) for r in runs)
        assert a == b, key


def test_a_failing_run_ends_failed_with_its_error(fast_overrides, store, tmp_path):
    cfg = compose_cfg(*fast_overrides, f"dataset.root={tmp_path / 'nowhere'}")
    with pytest.raises(Exception, match="does not exist"):
        train(cfg)
    _, run = only_run(store)
    assert run.info.status == "FAILED"
    assert "does not exist" in run.data.tags["tl.error"]
