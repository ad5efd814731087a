"""Find the images of a class-folder tree, set aside the ones that cannot be read, and load
the rest as 8-bit RGB whatever their mode.

Every candidate is opened and decoded before training starts, so a corrupt file is reported
once, up front, rather than crashing a DataLoader worker at epoch 7.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tl.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit grayscale (PNG, TIFF)


@dataclass
class Scan:
    classes: list[str]
    samples: list[tuple[Path, int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)


def display(path) -> str:
    """A path as printable text: names that are not valid UTF-8 get backslash escapes instead
    of breaking a log line, a text file or the tracking store."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_hidden(name: str) -> bool:
    return name.startswith(".")  # .DS_Store, macOS ._* resource forks, .ipynb_checkpoints


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in WIDE_GRAY:
        # PIL's own conversion clips 16-bit values at 255, which turns most pixels white.
        wide = np.clip(np.asarray(im, dtype=np.float64), 0, 65535) / 257.0
        return Image.fromarray(np.rint(wide).astype(np.uint8)).convert("RGB")
    if im.mode in ("P", "PA", "LA", "RGBA") or "transparency" in im.info:
        im = im.convert("RGBA")  # palette/alpha images composite predictably this way
    return im.convert("RGB")


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return to_rgb(im)


def class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise DataError(f"dataset folder {display(root)!r} does not exist: point dataset.root at a folder of class folders")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not is_hidden(e.name))
    if not classes:
        raise DataError(
            f"{display(root)!r} has no class folders: expected {display(root)}/<class_name>/<image files>"
        )
    return classes


def split_classes(train_dir: Path, val_dir: Path) -> list[str]:
    """The classes of a train/ + val/ tree: train's. A class val lacks is warned about later
    (`tl.data.checks`); a class only val has cannot be predicted, so it is an error."""
    classes = class_folders(train_dir)
    only_val = sorted(set(class_folders(val_dir)) - set(classes))
    if only_val:
        raise DataError(
            f"class folder(s) only in {display(val_dir.name)}/, not in {display(train_dir.name)}/: {only_val} "
            f"(under {display(train_dir.parent)!r}). A model cannot predict a class it never trained on: "
            f"add train images of them, or remove them from {display(val_dir.name)}/.")
    return classes


def check_image(path: Path) -> str | None:
    """None if the file decodes as an image, else why not."""
    if path.is_symlink() and not path.exists():
        return f"broken symlink (to {display(os.readlink(path))})"
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.draft("RGB", (64, 64))  # JPEG decodes at reduced scale: a full check, faster
                to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return f"larger than PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): {e}"
    except Exception as e:  # PIL raises many types for bad files
        return f"{type(e).__name__}: {e}"
    return None


def walk_once(root: Path):
    """`os.walk` following symlinked folders, each folder once: a symlink loop, or a second
    link to one folder, is not walked again."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        yield dirpath, dirnames, filenames


def scan(root: Path, classes: list[str] | None = None) -> Scan:
    classes = classes if classes is not None else class_folders(root)
    samples, skipped = [], []
    for idx, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in walk_once(folder):
            dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
            for name in sorted(filenames):
                if is_hidden(name):
                    continue
                path = Path(dirpath) / name
                if not name.lower().endswith(IMAGE_EXTENSIONS):
                    skipped.append((path, f"not an image file extension ({Path(name).suffix or 'none'})"))
                    continue
                why = check_image(path)
                if why:
                    skipped.append((path, why))
                else:
                    samples.append((path, idx))
    if skipped:
        names = ", ".join(display(p) for p, _ in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log.warning("skipping %d unreadable file(s) under %s: %s%s (first: %s)",
                    len(skipped), display(root), names, more, skipped[0][1])
    return Scan(classes, samples, skipped)
