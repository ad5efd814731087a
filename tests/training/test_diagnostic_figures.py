"""The diagnostics' figures: a confusion matrix coloured by count on one scale per val set, and
sample images shown as they are, under labels coloured by whether the prediction was right."""

import numpy as np
import torch
from PIL import Image

from tl.training import diagnostic_figures as figures


def pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB")).astype(int)


def cell_colour(im: Image.Image, matrix, i: int, j: int) -> tuple:
    """The colour near a cell's corner (its centre holds the count)."""
    a = pixels(im)
    top = figures.scale_of(matrix)
    drawn = np.zeros(a.shape[:2], bool)
    for colour in {figures.blues(c / top) for row in matrix for c in row}:
        drawn |= np.all(a == colour, axis=2)
    ys, xs = np.nonzero(drawn)  # the matrix's corner is its top left (the colour bar is right of it)
    cell = figures.cell_size(len(matrix))
    return tuple(a[ys.min() + i * cell + 2, xs.min() + j * cell + 2])


def test_cells_darken_with_their_count_on_the_largest_class_scale():
    matrix = [[40, 0, 10], [5, 45, 0], [0, 25, 25]]
    im = figures.confusion_image(matrix, ["ants", "bees", "wasps"])
    assert cell_colour(im, matrix, 0, 1) == figures.blues(0)
    assert cell_colour(im, matrix, 1, 1) == figures.blues(45 / 50)
    assert sum(cell_colour(im, matrix, 1, 1)) < sum(cell_colour(im, matrix, 0, 0)) < sum(cell_colour(im, matrix, 2, 1))


def test_the_colour_scale_is_the_largest_class_size_so_a_sweeps_matrices_compare():
    assert figures.scale_of([[3, 3, 0], [1, 5, 0], [0, 0, 6]]) == figures.scale_of([[6, 0, 0], [0, 6, 0], [0, 0, 6]]) == 6
    assert figures.scale_of([[0, 0], [0, 0]]) == 1  # an empty split still draws


def test_the_ramp_runs_from_white_to_dark_blue_and_clips():
    assert figures.blues(0) == figures.BLUES[0] and figures.blues(1) == figures.BLUES[-1]
    assert figures.blues(-1) == figures.BLUES[0] and figures.blues(2) == figures.BLUES[-1]
    assert figures.blues(0.5) == figures.BLUES[4]


def test_many_classes_draw_without_counts_and_long_names_are_cut():
    n = 100
    names = [f"class-{i}-" + "x" * 60 for i in range(n)]
    im = figures.confusion_image([[int(i == j) * 3 for j in range(n)] for i in range(n)], names)
    assert im.width < 3000 and im.height < 3000  # cut names, small cells: a figure one can open
    assert figures.short(names[0]).endswith("…") and len(figures.short(names[0])) == figures.LABEL_CHARS


def test_sample_images_appear_pixel_for_pixel_when_they_fit():
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 255, (3, 40, 56), dtype=torch.uint8, generator=g) for _ in range(3)]
    a = pixels(figures.samples_image([(img, 0, 0) for img in images], ["ants", "bees"]))
    for img in images:
        want = img.permute(1, 2, 0).numpy().astype(int)
        hits = np.argwhere(np.all(a == want[0, 0], axis=2))
        assert any(np.array_equal(a[y:y + 40, x:x + 56], want) for y, x in hits)


def test_large_and_grayscale_samples_are_shown_within_their_square():
    big = torch.full((3, 600, 300), 90, dtype=torch.uint8)
    gray = torch.full((1, 50, 50), 200, dtype=torch.uint8)
    im = figures.samples_image([(big, 0, 0), (gray, 1, 1)], ["ants", "bees"])
    a = pixels(im)
    assert im.width == figures.PAD + 2 * (figures.SAMPLE_SIDE + figures.PAD)
    assert np.all(a == 90, axis=2).sum() == figures.SAMPLE_SIDE * figures.SAMPLE_SIDE // 2  # 100 x 200
    assert np.all(a == 200, axis=2).sum() == 50 * 50


def test_labels_are_green_when_right_and_red_when_wrong():
    image = torch.zeros((3, 30, 30), dtype=torch.uint8)
    a = pixels(figures.samples_image([(image, 0, 0), (image, 0, 1)], ["ants", "bees"]))
    half = a.shape[1] // 2
    right, wrong = a[:, :half], a[:, half:]

    def has(part, colour):
        return np.all(part == colour, axis=2).any()

    assert has(right, figures.RIGHT) and not has(right, figures.WRONG)
    assert has(wrong, figures.WRONG) and not has(wrong, figures.RIGHT)


def test_a_long_label_is_cut_to_the_image_width():
    f = figures.font(12)
    text = figures.fitted("predicted: " + "a" * 200, f, figures.SAMPLE_SIDE)
    assert text.endswith("…") and f.getlength(text) <= figures.SAMPLE_SIDE
    assert figures.fitted("true: ants", f, figures.SAMPLE_SIDE) == "true: ants"
