"""The figures of a run's diagnostics: the confusion matrix and the grid of sample predictions.

Both are grids of coloured cells or images under short labels, so they are composed as images
with PIL. matplotlib cost 0.4 s to import and 0.3-0.8 s to lay each figure out: a tenth of a
lite0 freeze run end to end, and most of a sweep's later run on cached features; PIL draws
both in milliseconds.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

# The confusion matrix: flat colours and text, lossless and small as a PNG. The sample grid is
# photos: as a JPEG (4:4:4 chroma keeps the coloured labels crisp) 7 ms and 350 KB where PNG at
# zlib's fastest level took 100 ms and 1.2 MB, most of what a sweep's later run spent on its
# diagnostics.
FORMATS = {".png": {"format": "png", "compress_level": 1},
           ".jpg": {"format": "jpeg", "quality": 92, "subsampling": 0}}
MAX_ANNOTATED_CLASSES = 30  # beyond this, counts printed in the cells are unreadable
# ColorBrewer's "Blues" (matplotlib's), interpolated linearly between its nine anchors.
BLUES = ((247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
         (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107))
RIGHT, WRONG, INK, PAPER = (0, 128, 0), (214, 0, 0), (0, 0, 0), (255, 255, 255)
LABEL_CHARS = 28  # a class name longer than this is cut, with an ellipsis
SAMPLE_SIDE = 200  # each sample image is shown within a square of this many pixels
PAD = 8


@functools.cache
def font(size: int):
    return ImageFont.load_default(size=size)


def blues(fraction: float) -> tuple[int, int, int]:
    x = min(max(fraction, 0.0), 1.0) * (len(BLUES) - 1)
    i = min(int(x), len(BLUES) - 2)
    a, b, t = BLUES[i], BLUES[i + 1], x - i
    return tuple(round(u + (v - u) * t) for u, v in zip(a, b))


def short(name: str, limit: int = LABEL_CHARS) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"


def fitted(text: str, f, width: float) -> str:
    """`text`, cut with an ellipsis where it would run past `width` pixels."""
    if f.getlength(text) <= width:
        return text
    while text and f.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _text_size(f, text: str) -> tuple[int, int]:
    left, top, right, bottom = f.getbbox(text)
    return int(right - left) + 1, int(bottom) + 1


def _rotated(text: str, f, fill=INK) -> Image.Image:
    """`text` written upwards (rotated 90 degrees), on a transparent background."""
    w, h = _text_size(f, text)
    im = Image.new("LA", (w, h), (0, 0))
    ImageDraw.Draw(im).text((0, 0), text, font=f, fill=(fill[0], 255))
    return im.rotate(90, expand=True)


def scale_of(matrix: list[list[int]]) -> int:
    """The colour scale's top: the largest class's size, the same for every run on a val set,
    so the matrices of a sweep compare at a glance."""
    return max([sum(r) for r in matrix] + [1])


def cell_size(n_classes: int) -> int:
    """A cell's side in pixels: a matrix of about 480 pixels, within readable bounds."""
    return max(12, min(120, 480 // max(n_classes, 1)))


def confusion_image(matrix: list[list[int]], classes: list[str], split: str = "val") -> Image.Image:
    """Rows: true class; columns: predicted; each cell coloured by its count, from white at 0
    to dark blue at the largest class's size, with the count written in when there are at most
    `MAX_ANNOTATED_CLASSES` classes; a colour bar on the right."""
    n = len(classes)
    cell = cell_size(n)
    label_font, count_font, title_font = font(12), font(max(8, min(14, cell * 2 // 5))), font(14)
    names = [short(c) for c in classes]
    label_w = max(_text_size(label_font, s)[0] for s in names)
    line = _text_size(label_font, "Ag")[1]
    upright_cols = n <= 6 and all(label_font.getlength(s) <= cell for s in names)
    left = PAD + line + PAD + label_w + PAD  # "true", the row names
    top = PAD + _text_size(title_font, "Ag")[1] + PAD
    side = cell * n
    bottom = PAD + (line if upright_cols else label_w) + PAD + line + PAD  # column names, "predicted"
    bar_x = left + side + 3 * PAD
    bar_w = 14
    top_count = scale_of(matrix)
    right = 3 * PAD + bar_w + PAD + label_font.getlength(str(top_count)) + PAD
    im = Image.new("RGB", (int(left + side + right), top + side + bottom), PAPER)
    d = ImageDraw.Draw(im)
    d.text((left + side / 2, PAD), f"confusion matrix ({split})", font=title_font, fill=INK, anchor="ma")
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            x, y = left + j * cell, top + i * cell
            d.rectangle((x, y, x + cell - 1, y + cell - 1), fill=blues(count / top_count))
            if n <= MAX_ANNOTATED_CLASSES:
                d.text((x + cell / 2, y + cell / 2), str(count), font=count_font, anchor="mm",
                       fill=PAPER if count > top_count / 2 else INK)
    d.rectangle((left - 1, top - 1, left + side, top + side), outline=INK)
    for k, name in enumerate(names):
        mid = k * cell + cell / 2
        d.text((left - PAD, top + mid), name, font=label_font, fill=INK, anchor="rm")
        if upright_cols:
            d.text((left + mid, top + side + PAD), name, font=label_font, fill=INK, anchor="ma")
        else:
            label = _rotated(name, label_font)
            im.paste(label, (int(left + mid - label.width / 2), top + side + PAD), label)  # ends at the matrix
    d.text((left + side / 2, im.height - PAD), "predicted", font=label_font, fill=INK, anchor="md")
    true = _rotated("true", label_font)
    im.paste(true, (PAD, int(top + side / 2 - true.height / 2)), true)
    for k in range(side):  # the colour bar, dark at the top
        d.line((bar_x, top + k, bar_x + bar_w - 1, top + k), fill=blues(1 - k / max(side - 1, 1)))
    d.rectangle((bar_x - 1, top - 1, bar_x + bar_w, top + side), outline=INK)
    for value, y in ((top_count, top), (0, top + side)):
        d.text((bar_x + bar_w + PAD, y), str(value), font=label_font, fill=INK, anchor="lm")
    return im


def samples_image(samples: list[tuple[torch.Tensor, int, int]], classes: list[str]) -> Image.Image:
    """Each sample (uint8 CHW image, true, predicted) under its predicted and true labels, in
    green where they agree and red where not; four to a row, each image shown whole within a
    `SAMPLE_SIDE` square (smaller images at their own size)."""
    f = font(12)
    line = _text_size(f, "Ag")[1] + 2
    cols = min(4, len(samples))
    rows = -(-len(samples) // cols)
    cw, ch = SAMPLE_SIDE + PAD, 2 * line + SAMPLE_SIDE + 2 * PAD
    im = Image.new("RGB", (PAD + cols * cw, PAD + rows * ch), PAPER)
    d = ImageDraw.Draw(im)
    for k, (image, true, pred) in enumerate(samples):
        x, y = PAD + (k % cols) * cw, PAD + (k // cols) * ch
        colour = RIGHT if pred == true else WRONG
        for n, text in enumerate((f"predicted: {classes[pred]}", f"true: {classes[true]}")):
            d.text((x + SAMPLE_SIDE / 2, y + n * line), fitted(text, f, SAMPLE_SIDE), font=f, fill=colour,
                   anchor="ma")
        picture = Image.fromarray(_hwc(image))
        if max(picture.size) > SAMPLE_SIDE:
            picture.thumbnail((SAMPLE_SIDE, SAMPLE_SIDE), Image.BILINEAR)
        im.paste(picture, (x + (SAMPLE_SIDE - picture.width) // 2, y + 2 * line + PAD))
    return im


def _hwc(image: torch.Tensor):
    a = image.detach().cpu()
    if a.shape[0] == 1:
        a = a.expand(3, -1, -1)
    return a.permute(1, 2, 0).contiguous().numpy()


def save(image: Image.Image, path: Path) -> None:
    image.save(path, **FORMATS[path.suffix])
