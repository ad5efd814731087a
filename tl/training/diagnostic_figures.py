"""The figures of a run's diagnostics: the confusion matrix and the grid of sample predictions,
and `FIGURES`, the one registry that keeps the last of each drawn in this process.

A sweep's runs over one class list and val set draw the same figure with other counts or
titles: the registry lets a later run change only those, not lay the figure out again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

# Lossless either way; zlib's fastest level writes a grid of photos 3x sooner for ~3 % more bytes.
PNG = {"compress_level": 1}
MAX_ANNOTATED_CLASSES = 30  # beyond this, counts printed in the cells are unreadable


def plot_confusion(matrix: list[list[int]], classes: list[str], split: str = "val"):
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
        self.fig = plot_confusion(matrix, classes, split)
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


def plot_samples(samples: list[tuple[torch.Tensor, int, int]], classes: list[str]):
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
        self.fig = plot_samples(samples, classes)
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


class FigureRegistry:
    """The last confusion figure and sample grid drawn in this process, reused when the next
    run's figure has the same layout (same classes and scale; same images)."""

    def __init__(self):
        self.last_confusion: ConfusionFigure | None = None
        self.last_grid: SampleGrid | None = None

    def clear(self) -> None:
        self.last_confusion = self.last_grid = None

    def confusion(self, matrix, classes: list[str], split: str = "val") -> ConfusionFigure:
        c = self.last_confusion
        if c is not None and c.key == ConfusionFigure.key_of(matrix, classes, split):
            c.update(matrix)
        else:
            self.last_confusion = c = ConfusionFigure(matrix, classes, split)
        return c

    def sample_grid(self, samples, classes: list[str]) -> SampleGrid:
        g = self.last_grid
        if g is not None and g.key == SampleGrid.key_of(samples, classes):
            g.update(samples)
        else:
            self.last_grid = g = SampleGrid(samples, classes)
        return g


FIGURES = FigureRegistry()  # the process's one registry of figures kept between runs
