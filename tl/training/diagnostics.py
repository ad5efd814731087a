"""What a finished run gets right and wrong on its val split: confusion matrix, per-class
precision/recall/F1, and a grid of sample images with their predicted and true labels.

Everything is logged under the run's `diagnostics/` artifact folder; the same for the test
split, when there is one, under `diagnostics/test/`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
from pathlib import Path

import torch

from tl.data.imagefiles import display
from tl.runtime.io import load_tensors
from tl.runtime.precision import autocast
from tl.tracking import store
from tl.training.engine import evaluate

ARTIFACT_DIR = "diagnostics"
MAX_SAMPLES = 16
MAX_ANNOTATED_CLASSES = 30  # beyond this, counts printed in the cells are unreadable
# Lossless either way; zlib's fastest level writes a grid of photos 3x sooner for ~3 % more bytes.
PNG = {"compress_level": 1}


def confusion(targets: list[int], preds: list[int], n_classes: int) -> list[list[int]]:
    """Counts, rows = true class, columns = predicted class."""
    m = [[0] * n_classes for _ in range(n_classes)]
    for t, p in zip(targets, preds, strict=True):
        m[t][p] += 1
    return m


def per_class(matrix: list[list[int]], classes: list[str]) -> list[dict]:
    rows = []
    for i, name in enumerate(classes):
        tp = matrix[i][i]
        predicted = sum(matrix[r][i] for r in range(len(classes)))
        support = sum(matrix[i])
        # 0/0 counts as 0, as scikit-learn does: a class never predicted has no precision.
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1,
                     "support": support})
    return rows


def log_diagnostics(client, run_id: str, targets: list[int], preds: list[int], classes: list[str],
                    samples: list[tuple[torch.Tensor, int, int]], artifact_dir: str = ARTIFACT_DIR,
                    split: str = "val") -> None:
    """Log the diagnostics of one run's predictions; each sample is (uint8 CHW image, true
    label, predicted label)."""
    classes = [display(c) for c in classes]  # a class folder's name need not be valid UTF-8
    matrix = confusion(targets, preds, len(classes))
    scores = per_class(matrix, classes)
    with tempfile.TemporaryDirectory(prefix="tl-diagnostics-") as tmp:
        d = Path(tmp)
        _write_confusion(d, matrix, classes)
        _write_scores(d, scores, matrix)
        _confusion_figure(matrix, classes, split).save(d / "confusion_matrix.png")
        if samples:
            _sample_grid(samples, classes).save(d / "predictions.png")
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
    total = sum(map(sum, matrix))
    n = max(len(scores), 1)
    summary = {
        "accuracy": sum(matrix[i][i] for i in range(len(matrix))) / total if total else 0.0,
        "macro_precision": sum(s["precision"] for s in scores) / n,
        "macro_recall": sum(s["recall"] for s in scores) / n,
        "macro_f1": sum(s["f1"] for s in scores) / n,
        "images": total,
        "per_class": scores,
    }
    (d / "per_class.json").write_text(json.dumps(summary, indent=1))


def _plot_confusion(matrix: list[list[int]], classes: list[str], split: str = "val"):
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    n = len(classes)
    side = min(4 + 0.45 * n, 30)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    # Colours from 0 to the largest class's size: the same scale for every run on this val
    # set, so the matrices of a sweep compare at a glance.
    im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=_scale(matrix))
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks(range(n), classes, rotation=90 if n > 6 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({split})")
    if n <= MAX_ANNOTATED_CLASSES:
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, "", ha="center", va="center")
        _count_labels(ax, matrix)
    return fig


def _scale(matrix: list[list[int]]) -> int:
    return max([sum(r) for r in matrix] + [1])


def _count_labels(ax, matrix: list[list[int]]) -> None:
    top = _scale(matrix)
    cells = [count for row in matrix for count in row]
    for text, count in zip(ax.texts, cells, strict=True):
        text.set_text(str(count))
        text.set_color("white" if count > top / 2 else "black")


class ConfusionFigure:
    """The confusion matrix figure of a class list and val set, laid out once: a sweep's
    later runs change its cells and counts, not its layout (their scale is the same)."""

    def __init__(self, matrix: list[list[int]], classes: list[str], split: str = "val"):
        self.key = self.key_of(matrix, classes, split)
        self.fig = _plot_confusion(matrix, classes, split)
        self.fig.get_layout_engine().execute(self.fig)
        self.fig.set_layout_engine("none")

    @staticmethod
    def key_of(matrix, classes: list[str], split: str = "val") -> tuple:
        return tuple(classes), _scale(matrix), split

    def update(self, matrix: list[list[int]]) -> None:
        ax = self.fig.axes[0]
        ax.images[0].set_data(matrix)
        if ax.texts:
            _count_labels(ax, matrix)

    def save(self, path: Path) -> None:
        self.fig.savefig(path, dpi=100, pil_kwargs=PNG)


_CONFUSION: list[ConfusionFigure] = []  # the last one drawn


def _confusion_figure(matrix, classes: list[str], split: str = "val") -> ConfusionFigure:
    if _CONFUSION and _CONFUSION[0].key == ConfusionFigure.key_of(matrix, classes, split):
        _CONFUSION[0].update(matrix)
    else:
        _CONFUSION[:] = [ConfusionFigure(matrix, classes, split)]
    return _CONFUSION[0]


def _plot_samples(samples: list[tuple[torch.Tensor, int, int]], classes: list[str]):
    from matplotlib.figure import Figure

    cols = min(4, len(samples))
    rows = -(-len(samples) // cols)
    fig = Figure(figsize=(2.6 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (image, true, pred) in zip(axes, samples):
        ax.imshow(image.permute(1, 2, 0).numpy())
        _title(ax, classes, true, pred)
    return fig


def _title(ax, classes: list[str], true: int, pred: int) -> None:
    ax.set_title(f"predicted: {classes[pred]}\ntrue: {classes[true]}", fontsize=9,
                 color="green" if pred == true else "red")


class SampleGrid:
    """The grid of sample predictions, drawn once per set of images and classes.

    The runs of a sweep over one backbone and dataset show the same images with other
    predictions: the images and the layout are drawn once (laid out with the first run's
    titles), and each later grid redraws only the titles over that background."""

    def __init__(self, samples, classes: list[str]):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.key = self.key_of(samples, classes)
        self.classes = classes
        self.fig = _plot_samples(samples, classes)
        self.canvas = FigureCanvasAgg(self.fig)
        self.fig.get_layout_engine().execute(self.fig)  # lays the grid out around the titles
        self.fig.set_layout_engine("none")  # and keeps that layout from here on
        self.axes = [ax for ax in self.fig.axes if ax.images]
        for ax in self.axes:
            ax.title.set_visible(False)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)
        for ax in self.axes:
            ax.title.set_visible(True)
        self.update(samples)

    @staticmethod
    def key_of(samples, classes: list[str]) -> tuple:
        images = hashlib.sha256()
        for image, true, _ in samples:
            images.update(image.contiguous().numpy().tobytes())
            images.update(str(true).encode())
        return images.hexdigest(), tuple(classes)

    def update(self, samples) -> None:
        self.canvas.restore_region(self.background)
        for ax, (_, true, pred) in zip(self.axes, samples):
            _title(ax, self.classes, true, pred)
            ax.draw_artist(ax.title)

    def save(self, path: Path) -> None:
        from PIL import Image

        w, h = self.canvas.get_width_height()
        Image.frombuffer("RGBA", (w, h), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1).save(
            path, format="png", **PNG)


_GRID: list[SampleGrid] = []  # the last one drawn


def _sample_grid(samples, classes: list[str]) -> SampleGrid:
    if _GRID and _GRID[0].key == SampleGrid.key_of(samples, classes):
        _GRID[0].update(samples)
    else:
        _GRID[:] = [SampleGrid(samples, classes)]
    return _GRID[0]


def spread(n_items: int, k: int) -> set[int]:
    """k indices spread evenly over n_items: val sets are sorted by class, so the first k
    images would often all be one class."""
    if n_items <= k:
        return set(range(n_items))
    return {round(i * (n_items - 1) / (k - 1)) for i in range(k)} if k > 1 else {0}


@torch.inference_mode()
def predict(model, loader, prep, rt, n_items: int, n_samples: int = MAX_SAMPLES):
    """Targets and predictions over `loader`, plus up to `n_samples` (uint8 image, true,
    predicted) spread over it when the batches are images (not cached features)."""
    model.eval()
    keep = spread(n_items, n_samples)
    targets, preds, samples, seen = [], [], [], 0
    for x, y in loader:
        xd, _ = prep(x, y)
        with autocast(rt.device, rt.autocast_dtype):
            p = model(xd).argmax(1).cpu()
        y = y.cpu()
        targets += y.tolist()
        preds += p.tolist()
        if x.dtype == torch.uint8 and x.dim() == 4:
            samples += [(x[i].cpu(), int(y[i]), int(p[i])) for i in range(len(y)) if seen + i in keep]
        seen += len(y)
    return targets, preds, samples


def log_best(client, run_id: str, model, checkpoint: Path | None, job) -> None:
    """Diagnostics of the best checkpoint (the model whose val accuracy the run reports as
    `best_val_acc`), not of the final epoch's weights; `checkpoint` None: the model as it is."""
    if checkpoint is not None and checkpoint.is_file():  # absent with tracking.log_checkpoint=false: the final weights, then
        from tl.training.checkpoints import load_model

        state = load_tensors(checkpoint, map_location=job.rt.device)
        load_model(model, state, f"checkpoint {str(checkpoint)!r}")  # job.step_model is `model` or its head
    targets, preds, samples = predict(job.step_model, job.val_loader, job.prep, job.loop_rt, job.n_val)
    if not samples and job.shown:  # trained on cached features: the images were kept aside
        samples = [(image, targets[i], preds[i]) for i, image in job.shown.items()]
    log_diagnostics(client, run_id, targets, preds, list(job.classes), samples)


def log_test(client, run_id: str, job, step: int) -> dict[str, float]:
    """The model as it is now (`log_best` loaded the val-selected checkpoint) on the test split,
    once: `test_acc`, `test_loss` and the test diagnostics. Nothing reads them back: test never
    steers selection or training."""
    result = evaluate(job.step_model, job.test_loader, torch.nn.CrossEntropyLoss(), job.rt, job.prep)
    targets, preds, samples = predict(job.step_model, job.test_loader, job.prep, job.rt, job.n_test)
    if not samples and job.shown_test:
        samples = [(image, targets[i], preds[i]) for i, image in job.shown_test.items()]
    log_diagnostics(client, run_id, targets, preds, list(job.classes), samples,
                    f"{ARTIFACT_DIR}/test", "test")
    metrics = {"test_acc": result.acc, "test_loss": result.loss}
    store.log_metrics(client, run_id, metrics, step=step)
    return metrics
