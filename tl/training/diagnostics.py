"""What a finished run gets right and wrong on its val split: confusion matrix, per-class
precision/recall/F1, and a grid of sample images with their predicted and true labels.

Everything is logged under the run's `diagnostics/` artifact folder; the same for the test
split, when there is one, under `diagnostics/test/`. This module decides what is logged and
writes the files; the maths is in `scores`, the inference in `predictions` (one pass per split)
and the figures in `diagnostic_figures`.
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

from tl.data.imagefiles import display
from tl.runtime import timeline
from tl.runtime.io import load_tensors
from tl.tracking import store
from tl.training import diagnostic_figures as figures
from tl.training.predictions import MAX_SAMPLES, Predictions, predict, spread
from tl.training.scores import confusion, per_class, summary

__all__ = ["ARTIFACT_DIR", "MAX_SAMPLES", "confusion", "per_class", "spread", "predict",
           "log_diagnostics", "log_best", "log_test"]

ARTIFACT_DIR = "diagnostics"


def log_diagnostics(client, run_id: str, targets: list[int], preds: list[int], classes: list[str],
                    samples, artifact_dir: str = ARTIFACT_DIR, split: str = "val") -> None:
    """Log the diagnostics of one run's predictions; each sample is (uint8 CHW image, true
    label, predicted label)."""
    classes = [display(c) for c in classes]  # a class folder's name need not be valid UTF-8
    matrix = confusion(targets, preds, len(classes))
    scores = per_class(targets, preds, classes)
    with tempfile.TemporaryDirectory(prefix="tl-diagnostics-") as tmp:
        d = Path(tmp)
        _write_confusion(d, matrix, classes)
        _write_scores(d, scores, matrix)
        figures.save(figures.confusion_image(matrix, classes, split), d / "confusion_matrix.png")
        if samples:
            figures.save(figures.samples_image(samples, classes), d / "predictions.jpg")
        client.log_artifacts(run_id, str(d), artifact_dir)


def _write_confusion(d: Path, matrix: list[list[int]], classes: list[str]) -> None:
    with open(d / "confusion_matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, matrix):
            w.writerow([name, *row])
    (d / "confusion_matrix.json").write_text(json.dumps(
        {"classes": classes, "rows": "true", "columns": "predicted", "matrix": matrix}, indent=1))


def _write_scores(d: Path, scores: list[dict], matrix: list[list[int]]) -> None:
    with open(d / "per_class.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["class", "precision", "recall", "f1", "support"])
        w.writeheader()
        w.writerows(scores)
    (d / "per_class.json").write_text(json.dumps(summary(matrix, scores), indent=1))


def _shown(p: Predictions, shown: dict) -> list:
    """The samples to draw: the images the model saw, or on cached features the ones kept aside."""
    if not p.samples and shown:
        return [(image, p.targets[i], p.preds[i]) for i, image in shown.items()]
    return p.samples


@timeline.part("diagnostics")
def log_best(client, run_id: str, model, checkpoint: Path | None, job) -> None:
    """Diagnostics of the best checkpoint (the model whose val accuracy the run reports as
    `best_val_acc`), not of the final epoch's weights; `checkpoint` None: the model as it is."""
    if checkpoint is not None and checkpoint.is_file():  # absent with tracking.log_checkpoint=false
        from tl.training.checkpoints import load_model

        state = load_tensors(checkpoint, map_location=job.rt.device)
        load_model(model, state, f"checkpoint {str(checkpoint)!r}")  # job.step_model is `model` or its head
    p = predict(job.step_model, job.val_loader, job.prep, job.loop_rt, job.n_val)
    log_diagnostics(client, run_id, p.targets, p.preds, list(job.classes), _shown(p, job.shown))


@timeline.part("diagnostics")
def log_test(client, run_id: str, job, step: int) -> dict[str, float]:
    """The model as it is now (`log_best` loaded the val-selected checkpoint) on the test split,
    in one pass: `test_acc`, `test_loss` and the test diagnostics. Nothing reads them back:
    test never steers selection or training."""
    p = predict(job.step_model, job.test_loader, job.prep, job.rt, job.n_test)
    log_diagnostics(client, run_id, p.targets, p.preds, list(job.classes), _shown(p, job.shown_test),
                    f"{ARTIFACT_DIR}/test", "test")
    metrics = {"test_acc": p.acc, "test_loss": p.loss}
    store.log_metrics(client, run_id, metrics, step=step)
    return metrics
