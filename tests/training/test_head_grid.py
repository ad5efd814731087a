"""A grid of heads trained at once is the same as each head trained alone, and a freeze run
with `+head_grid.lrs=...` logs the grid as a table and reports its best head."""

import csv
import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from torch import nn

from tests.conftest import compose_cfg, make_image_folder
from tl.errors import ConfigError
from tl.runtime.machine import Runtime
from tl.train import train
from tl.training import head_grid
from tl.training.engine import Preprocess, evaluate, train_one_epoch
from tl.training.features import FeatureBatches, Features
from tl.training.optim import build_optimizer, build_scheduler
from tl.training.strategies import Plan

LRS, WDS, EPOCHS, SEED = [0.01, 0.1], [0.0, 0.05], 4, 7
STEP = OmegaConf.create({"name": "step", "decay_epochs": 2, "decay_rate": 0.5, "warmup_epochs": 0})
COSINE = OmegaConf.create({"name": "cosine", "min_lr": 0.0, "warmup_epochs": 1})


def feats(views=2, n=20, m=12, d=16, classes=3) -> Features:
    g = torch.Generator().manual_seed(0)
    train_y = torch.arange(n) % classes
    val_y = torch.arange(m) % classes
    centres = torch.randn(classes, d, generator=g)
    train = centres[train_y] + torch.randn(views, n, d, generator=g)
    val = centres[val_y] + torch.randn(m, d, generator=g)
    return Features([f"c{i}" for i in range(classes)], train, train_y, val, val_y, {}, {}, {})


def alone(f: Features, lr, wd, optimizer_cfg, scheduler_cfg, dropout=0.0) -> dict[str, list[float]]:
    """One head as a freeze run trains it: nn.Linear, tl's optimizer and schedule, the epoch loop."""
    rt = Runtime(torch.device("cpu"), "fp32", "", False, 0, "")
    torch.manual_seed(SEED)
    head = nn.Linear(f.train.shape[-1], len(f.classes))
    hooks = [head.register_forward_pre_hook(lambda m, a: (F.dropout(a[0], dropout, training=m.training),))]
    plan = Plan("freeze", 0, "eval", [], 0, 0, [head], dropout, hooks)
    opt = build_optimizer(head, OmegaConf.merge(optimizer_cfg, {"lr": lr, "weight_decay": wd}))
    sched = build_scheduler(opt, scheduler_cfg, EPOCHS)
    train_batches = FeatureBatches(f.train, f.train_targets, 8, SEED)
    val_batches = FeatureBatches(f.val, f.val_targets, 8)
    curves = {k: [] for k in head_grid.CURVES}
    for epoch in range(1, EPOCHS + 1):
        train_batches.set_epoch(epoch)
        lr_now = opt.param_groups[0]["lr"]
        tr = train_one_epoch(head, train_batches, opt, nn.CrossEntropyLoss(), rt, plan, Preprocess(rt))
        va = evaluate(head, val_batches, nn.CrossEntropyLoss(), rt, Preprocess(rt))
        sched.step(epoch)
        for k, v in zip(head_grid.CURVES, (tr.loss, tr.acc, va.loss, va.acc, lr_now)):
            curves[k].append(v)
    return curves


def grid(f, optimizer_cfg, scheduler_cfg, dropout=0.0):
    return head_grid.train_head_grid(f, LRS, WDS, EPOCHS, SEED, optimizer_cfg, scheduler_cfg,
                                     batch_size=8, head_dropout=dropout)


@pytest.mark.parametrize("optimizer_cfg, scheduler_cfg, dropout", [
    ({"name": "sgd", "momentum": 0.9}, STEP, 0.0),
    ({"name": "nesterov", "momentum": 0.9}, COSINE, 0.3),
    ({"name": "adamw", "momentum": None}, STEP, 0.0),
], ids=["sgd-step", "nesterov-cosine-dropout", "adamw-step"])
def test_each_head_of_the_grid_has_the_curves_it_has_trained_alone(optimizer_cfg, scheduler_cfg, dropout):
    optimizer_cfg = OmegaConf.create({"lr": 1.0, "weight_decay": 0.0, **optimizer_cfg})
    f = feats()
    heads = grid(f, optimizer_cfg, scheduler_cfg, dropout)
    assert [(h.lr, h.weight_decay) for h in heads] == [(lr, wd) for lr in LRS for wd in WDS]
    for h in heads:
        expected = alone(f, h.lr, h.weight_decay, optimizer_cfg, scheduler_cfg, dropout)
        for key in head_grid.CURVES:
            assert h.curves[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-5), (h.lr, h.weight_decay, key)


def test_heads_differ_by_their_settings_and_the_best_epoch_is_the_best_val_acc():
    heads = grid(feats(), OmegaConf.create({"name": "sgd", "lr": 1.0, "momentum": 0.9, "weight_decay": 0.0}), STEP)
    assert len({tuple(h.curves["train_loss"]) for h in heads}) == len(heads)
    for h in heads:
        assert h.best_val_acc == max(h.curves["val_acc"])
        assert h.curves["val_acc"][h.best_epoch - 1] == h.best_val_acc
        assert h.weight.shape == (3, 16) and h.bias.shape == (3,)


def test_a_grid_without_values_or_with_a_negative_rate_is_a_config_error():
    with pytest.raises(ConfigError, match="head_grid.lrs"):
        head_grid.settings([], [0.0])
    with pytest.raises(ConfigError, match="head_grid.wds"):
        head_grid.settings([0.1], [-1.0])
    with pytest.raises(ConfigError, match="list of numbers"):
        head_grid.settings(["fast"], [0.0])
    assert head_grid.settings(0.1, 0.0) == [(0.1, 0.0)]  # one value is a grid of one


def test_a_freeze_run_with_a_grid_logs_the_table_and_reports_its_best_head(fast_overrides, store, tmp_path):
    result = train(compose_cfg(*fast_overrides, "strategy=freeze", "+head_grid.lrs=[0.001,0.01,0.1]",
                               "+head_grid.wds=[0.0,0.001]"))
    client = MlflowClient(store)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["head_grid.size"] == "6"
    table = Path(client.download_artifacts(result.run_id, "head_grid.csv", str(tmp_path))).read_text()
    rows = list(csv.DictReader(io.StringIO(table)))
    assert [(float(r["lr"]), float(r["weight_decay"])) for r in rows] == [
        (lr, wd) for lr in (0.001, 0.01, 0.1) for wd in (0.0, 0.001)]
    assert result.best_val_acc == max(float(r["best_val_acc"]) for r in rows) == run.data.metrics["best_val_acc"]
    assert len(client.get_metric_history(result.run_id, "val_acc")) == 2  # the best head's curve
    summary = json.loads(Path(client.download_artifacts(result.run_id, "diagnostics/per_class.json",
                                                         str(tmp_path))).read_text())
    assert summary["accuracy"] == pytest.approx(result.best_val_acc)  # diagnostics of the best head
    assert "checkpoints/best.pt" in {a.path for a in client.list_artifacts(result.run_id, "checkpoints")}


def test_a_grid_on_a_strategy_without_cached_features_is_refused_with_the_fix(fast_overrides):
    with pytest.raises(ConfigError, match="strategy=freeze"):
        train(compose_cfg(*fast_overrides, "strategy=finetune", "+head_grid.lrs=[0.01]"))


@pytest.mark.parametrize("evaluate_test", [True, False])
def test_a_grid_run_evaluates_its_best_head_on_test_only_when_asked(fast_overrides, store, tmp_path, evaluate_test):
    root = make_image_folder(tmp_path / "data")
    make_image_folder(tmp_path / "extra", n_train=1, n_val=4, seed=1)
    (tmp_path / "extra" / "val").rename(root / "test")
    overrides = [o for o in fast_overrides if not o.startswith("dataset.root=")]
    result = train(compose_cfg(*overrides, f"dataset.root={root}", "strategy=freeze", "+head_grid.lrs=[0.01,0.1]",
                               f"trainer.evaluate_test={str(evaluate_test).lower()}"))
    metrics = MlflowClient(store).get_run(result.run_id).data.metrics
    assert ("test_acc" in metrics) is evaluate_test and (result.test_acc is not None) is evaluate_test
