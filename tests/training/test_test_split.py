"""A test split is evaluated once, at the end, on the checkpoint val selected, and nothing else
depends on it: relabelling the test images changes the test metrics and nothing else."""

import shutil

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg, make_image_folder
from tests.helpers.runs import CURVES, runs
from tl.tracking.readback import history
from tl.train import train

# Every batch kind a run can train and evaluate on.
BATCH_KINDS = {
    "streamed images": ["strategy=finetune", "trainer.image_cache_mb=0"],
    "decoded images in memory": ["strategy=finetune"],
    "device batches": ["strategy=partial_freeze", "trainer.device_augment=true"],
    "cached frozen features": ["strategy=freeze"],
}


def with_test(tmp_path, n_test=6):
    root = make_image_folder(tmp_path / "data", n_train=8, n_val=4)
    make_image_folder(tmp_path / "extra", n_train=n_test, n_val=0, seed=7)
    shutil.copytree(tmp_path / "extra" / "train", root / "test")
    return root


def overrides(root, store, *extra):
    return ["dataset=imagefolder", f"dataset.root={root}", "model=timm", "model.name=test_resnet",
            "model.pretrained=false", "model.input_size=32", "trainer.epochs=3", "trainer.batch_size=4",
            "trainer.num_workers=0",
            f"tracking.uri={store}", *extra]


def swap_test_labels(root):
    test = root / "test"
    (test / "ants").rename(test / "tmp")
    (test / "bees").rename(test / "ants")
    (test / "tmp").rename(test / "bees")


@pytest.mark.parametrize("kind", BATCH_KINDS)
def test_relabelled_test_images_change_only_the_test_metrics(tmp_path, store, kind):
    root = with_test(tmp_path)
    cfg = compose_cfg(*overrides(root, store, *BATCH_KINDS[kind]))
    train(cfg)
    swap_test_labels(root)
    train(cfg)
    client, (a, b) = runs(store)
    for key in CURVES:
        assert history(client, a.info.run_id, key) == history(client, b.info.run_id, key), key
    for key in ("best_val_acc", "best_epoch"):
        assert a.data.metrics[key] == b.data.metrics[key], key
    # Two classes, every test label flipped: each right answer became a wrong one.
    assert a.data.metrics["test_acc"] + b.data.metrics["test_acc"] == pytest.approx(1.0)
    assert a.data.metrics["test_loss"] != b.data.metrics["test_loss"]
    if kind == "cached frozen features":  # the cached test features were not reused
        assert b.data.params["runtime.feature_cache"] == "miss"


def test_a_run_with_a_test_split_logs_test_metrics_and_diagnostics_beside_val(tmp_path, store):
    root = with_test(tmp_path, n_test=5)
    train(compose_cfg(*overrides(root, store, "strategy=freeze")))
    client, (run,) = runs(store)
    m, p = run.data.metrics, run.data.params
    assert 0 <= m["test_acc"] <= 1 and m["test_loss"] > 0
    assert history(client, run.info.run_id, "test_acc") == [(3, m["test_acc"])]  # once, at the end
    assert p["data.test_images"] == "10" and p["data.val_images"] == "8"
    names = {a.path for a in client.list_artifacts(run.info.run_id, "diagnostics")}
    assert {"diagnostics/confusion_matrix.csv", "diagnostics/per_class.json", "diagnostics/predictions.jpg",
            "diagnostics/test"} <= names
    test_names = {a.path for a in client.list_artifacts(run.info.run_id, "diagnostics/test")}
    assert {"diagnostics/test/confusion_matrix.csv", "diagnostics/test/per_class.json",
            "diagnostics/test/predictions.jpg"} <= test_names
    import json

    local = client.download_artifacts(run.info.run_id, "diagnostics/test/per_class.json", str(tmp_path))
    summary = json.loads(open(local).read())
    assert summary["images"] == 10 and summary["accuracy"] == pytest.approx(m["test_acc"])


def test_the_test_split_is_evaluated_on_the_checkpoint_val_selected(tmp_path, store):
    root = make_image_folder(tmp_path / "data", n_train=8, n_val=4)
    shutil.copytree(root / "val", root / "test")  # test = val: the val-selected model scores best_val_acc
    # A learning rate that overshoots, so the last epoch is not the best one. Where a curve
    # comes out so on a CPU's numerics varies: the first of a few rates and seeds that does is
    # the run under test (at least one must, or the test could not tell best from last).
    client = MlflowClient(store)
    for lr, seed in [(0.5, 42), (0.2, 42), (0.05, 1), (0.02, 2)]:
        train(compose_cfg(*overrides(root, store, "strategy=finetune", "model.name=resnet10t", f"optimizer.lr={lr}",
                                     f"trainer.seed={seed}", "trainer.epochs=4", "trainer.batch_size=2")))
        run = client.search_runs([client.get_experiment_by_name("tl").experiment_id],
                                 order_by=["attributes.start_time DESC"], max_results=1)[0]
        m = run.data.metrics
        val = dict(history(client, run.info.run_id, "val_acc"))
        if val[4] != m["best_val_acc"]:
            break
    assert val[4] != m["best_val_acc"], "no run whose last epoch is not its best"
    assert m["test_acc"] == pytest.approx(m["best_val_acc"])
    assert m["test_loss"] == pytest.approx(dict(history(client, run.info.run_id, "val_loss"))[int(m["best_epoch"])])


def test_a_run_without_a_test_split_logs_no_test_metrics(tmp_path, store):
    root = make_image_folder(tmp_path / "data")
    train(compose_cfg(*overrides(root, store, "strategy=freeze", "trainer.epochs=1")))
    client, (run,) = runs(store)
    assert "test_acc" not in run.data.metrics and "test_loss" not in run.data.metrics
    assert run.data.params["data.test_images"] == "0"
    assert "diagnostics/test" not in {a.path for a in client.list_artifacts(run.info.run_id, "diagnostics")}


def test_test_fraction_carves_a_test_split_a_run_evaluates(tmp_path, store):
    root = make_image_folder(tmp_path / "flat", n_train=10, n_val=0, layout="flat")
    train(compose_cfg(*overrides(root, store, "strategy=freeze", "trainer.epochs=1",
                                 "dataset.val_fraction=0.2", "dataset.test_fraction=0.2")))
    _, (run,) = runs(store)
    p = run.data.params
    assert (p["data.train_images"], p["data.val_images"], p["data.test_images"]) == ("12", "4", "4")
    assert "test_acc" in run.data.metrics


def test_test_images_identical_to_train_images_are_counted_as_leakage(tmp_path, caplog):
    import logging

    from tl.data import checks, datasets
    from tl.models.backbones import DataConfig

    root = with_test(tmp_path)
    leaked = next((root / "train" / "ants").glob("*.png"))
    shutil.copy(leaked, root / "test" / "ants" / "copy.png")
    cfg = compose_cfg("dataset=imagefolder", f"dataset.root={root}")
    splits = datasets.build_splits(cfg.dataset, DataConfig(32, 36, (0.5,) * 3, (0.5,) * 3, "bilinear"))
    with caplog.at_level(logging.WARNING):
        report = checks.check(splits)
    assert report.metrics["train_test_duplicates"] == 1
    assert "copy.png" in report.files["train_test_duplicates.txt"]
    assert "train/test leakage" in caplog.text
