"""Find the images of a class-folder tree, and set aside the ones that cannot be read.

Every candidate is opened and decoded before training starts, so a corrupt file is reported
once, up front, rather than crashing a DataLoader worker at epoch 7.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tl.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


@dataclass
class Scan:
    classes: list[str]
    samples: list[tuple[Path, int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)


def is_hidden(name: str) -> bool:
    return name.startswith(".")  # .DS_Store, macOS ._* resource forks, .ipynb_checkpoints


def class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise DataError(f"dataset folder {str(root)!r} does not exist: point dataset.root at a folder of class folders")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not is_hidden(e.name))
    if not classes:
        raise DataError(
            f"{str(root)!r} has no class folders: expected {root}/<class_name>/<image files>"
        )
    return classes


def check_image(path: Path) -> str | None:
    """None if the file decodes as an image, else why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.draft("RGB", (64, 64))  # JPEG decodes at reduced scale: a full check, faster
                im.load()
    except Exception as e:  # PIL raises many types for bad files
        return f"{type(e).__name__}: {e}"
    return None


def scan(root: Path, classes: list[str] | None = None) -> Scan:
    classes = classes if classes is not None else class_folders(root)
    samples, skipped = [], []
    for idx, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
            for name in sorted(filenames):
                if is_hidden(name):
                    continue
                path = Path(dirpath) / name
                if not name.lower().endswith(IMAGE_EXTENSIONS):
                    skipped.append((path, "not an image file extension"))
                    continue
                why = check_image(path)
                if why:
                    skipped.append((path, why))
                else:
                    samples.append((path, idx))
    if skipped:
        names = ", ".join(str(p) for p, _ in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log.warning("skipping %d unreadable file(s) under %s: %s%s (first: %s)",
                    len(skipped), root, names, more, skipped[0][1])
    return Scan(classes, samples, skipped)
