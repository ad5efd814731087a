"""Every finished run logs what it gets right and wrong: confusion matrix, per-class scores and
sample predictions, for its best checkpoint."""

import csv
import io
import json
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import compose_cfg
from tl.runtime import progress
from tl.tracking import store as mlflow_store
from tl.train import train
from tl.training import diagnostics

CLASSES = ["ants", "bees", "wasps"]


def read(client, run_id, path, tmp_path) -> str:
    return Path(client.download_artifacts(run_id, path, str(tmp_path))).read_text()


def test_the_confusion_matrix_has_true_classes_as_rows_and_predictions_as_columns():
    assert diagnostics.confusion([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_per_class_scores_are_precision_recall_and_f1_of_each_class():
    # 3 ants right, 1 ant taken for a bee, 2 bees right, no wasp at all
    scores = diagnostics.per_class([0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1], CLASSES)
    ants, bees, wasps = scores
    assert (ants["precision"], ants["recall"], ants["support"]) == (1.0, 0.75, 4)
    assert ants["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert (bees["precision"], bees["recall"]) == (2 / 3, 1.0)
    assert (wasps["precision"], wasps["recall"], wasps["f1"]) == (0.0, 0.0, 0.0)  # never seen


def test_the_scores_are_scikit_learns_on_any_predictions():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 200):
        targets = torch.randint(0, 4, (n,), generator=g).tolist()
        preds = torch.randint(0, 4, (n,), generator=g).tolist()
        labels = list(range(5))  # class 4 is never seen nor predicted
        assert diagnostics.confusion(targets, preds, 5) == confusion_matrix(targets, preds, labels=labels).tolist()
        p, r, f, s = precision_recall_fscore_support(targets, preds, labels=labels, zero_division=0)
        ours = diagnostics.per_class(targets, preds, list("abcde"))
        assert [x["precision"] for x in ours] == pytest.approx(p.tolist(), abs=1e-12)
        assert [x["recall"] for x in ours] == pytest.approx(r.tolist(), abs=1e-12)
        assert [x["f1"] for x in ours] == pytest.approx(f.tolist(), abs=1e-12)
        assert [x["support"] for x in ours] == s.tolist()


def test_an_empty_split_scores_all_zeros():
    assert diagnostics.confusion([], [], 2) == [[0, 0], [0, 0]]
    assert [x["f1"] for x in diagnostics.per_class([], [], ["a", "b"])] == [0.0, 0.0]


def test_log_diagnostics_logs_the_matrix_the_scores_and_a_sample_grid(store, tmp_path):
    client = mlflow_store.prepare_store(store)
    run_id = client.create_run(mlflow_store.experiment_id(client, "tl", store)).info.run_id
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    diagnostics.log_diagnostics(client, run_id, [0, 1, 1, 2], [0, 1, 2, 2], CLASSES,
                                [(image, 0, 0), (image, 1, 2)])
    logged = {a.path for a in client.list_artifacts(run_id, "diagnostics")}
    assert logged == {f"diagnostics/{f}" for f in (
        "confusion_matrix.png", "confusion_matrix.csv", "confusion_matrix.json",
        "per_class.csv", "per_class.json", "predictions.jpg")}
    rows = list(csv.reader(io.StringIO(read(client, run_id, "diagnostics/confusion_matrix.csv", tmp_path))))
    assert rows == [["true \\ predicted", *CLASSES], ["ants", "1", "0", "0"], ["bees", "0", "1", "1"],
                    ["wasps", "0", "0", "1"]]
    text = read(client, run_id, "diagnostics/per_class.csv", tmp_path)
    scores = {r["class"]: r for r in csv.DictReader(io.StringIO(text))}
    assert float(scores["bees"]["recall"]) == 0.5 and float(scores["wasps"]["precision"]) == 0.5


def test_a_finished_run_logs_diagnostics_of_its_best_checkpoint(fast_overrides, store, tmp_path):
    best = train(compose_cfg(*fast_overrides, "strategy=partial_freeze")).best_val_acc
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("tl").experiment_id])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "diagnostics")}
    assert {"diagnostics/confusion_matrix.png", "diagnostics/per_class.csv",
            "diagnostics/predictions.jpg"} <= logged
    summary = json.loads(read(client, run.info.run_id, "diagnostics/per_class.json", tmp_path))
    assert summary["images"] == 8  # 4 val images in each of 2 classes
    assert summary["accuracy"] == pytest.approx(best)  # the best checkpoint, not the last epoch


def test_a_freeze_run_on_cached_features_still_shows_its_predictions(fast_overrides, store):
    train(compose_cfg(*fast_overrides, "strategy=freeze"))
    train(compose_cfg(*fast_overrides, "strategy=freeze"))  # the second reads the features from disk
    client = MlflowClient(store)
    for run in client.search_runs([client.get_experiment_by_name("tl").experiment_id]):
        logged = {a.path for a in client.list_artifacts(run.info.run_id, "diagnostics")}
        assert "diagnostics/predictions.jpg" in logged, run.data.params["runtime.feature_cache"]


def test_sample_images_are_spread_over_the_val_set():
    assert diagnostics.spread(100, 4) == {0, 33, 66, 99}
    assert diagnostics.spread(3, 16) == {0, 1, 2}


def test_samples_are_the_uint8_images_the_model_saw_and_none_for_cached_features():
    from tl.runtime.machine import Runtime
    from tl.training.engine import Preprocess

    rt = Runtime(torch.device("cpu"), "fp32", "", False, 0, "")
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    p = diagnostics.predict(model, [(images, torch.tensor([0, 1, 0, 1]))],
                            Preprocess(rt, (0.5,) * 3, (0.5,) * 3), rt, 4)
    assert len(p.preds) == 4 and torch.equal(p.samples[2][0], images[2])
    feats = [(torch.randn(4, 192), torch.tensor([0, 1, 0, 1]))]
    assert diagnostics.predict(model[1:], feats, Preprocess(rt), rt, 4).samples == []


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_show_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    loader = [1, 2, 3]
    assert progress.batches(loader, "train") is loader
    assert list(progress.epochs(2)) == [1, 2]

    monkeypatch.setattr("sys.stderr", Terminal())
    assert [list(progress.batches(loader, "train")) for _ in progress.epochs(2)] == [loader, loader]
    shown = sys.stderr.getvalue()
    assert "epochs: 100%" in shown and "2/2" in shown


class CountedPasses(list):
    passes = 0

    def __iter__(self):
        self.passes += 1
        return super().__iter__()


def test_the_test_split_is_read_once_for_its_metrics_and_diagnostics(store):
    from types import SimpleNamespace

    from tl.runtime.machine import Runtime
    from tl.training.engine import Preprocess, evaluate

    client = mlflow_store.prepare_store(store)
    run_id = client.create_run(mlflow_store.experiment_id(client, "tl", store)).info.run_id
    rt = Runtime(torch.device("cpu"), "fp32", "", False, 0, "")
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    batches = CountedPasses([(torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])),
                             (torch.randn(3, 8), torch.tensor([2, 2, 0]))])
    job = SimpleNamespace(step_model=model, test_loader=batches, prep=Preprocess(rt), rt=rt, n_test=8,
                          classes=CLASSES, shown_test={})
    metrics = diagnostics.log_test(client, run_id, job, step=1)
    assert batches.passes == 1
    expected = evaluate(model, list(batches), torch.nn.CrossEntropyLoss(), rt, Preprocess(rt))
    assert metrics == {"test_acc": expected.acc, "test_loss": expected.loss}
    assert {a.path for a in client.list_artifacts(run_id, "diagnostics/test")} >= {
        "diagnostics/test/confusion_matrix.csv", "diagnostics/test/per_class.json"}
