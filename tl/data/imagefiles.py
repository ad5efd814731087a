"""Find the images of a class-folder tree, set aside the ones that cannot be read, and load
the rest upright (EXIF orientation applied) as 8-bit RGB whatever their mode.

Every candidate is opened and decoded before training starts, so a corrupt file is reported
once, up front, rather than crashing a DataLoader worker at epoch 7, or training on the
garbage a JPEG with damaged bytes decodes to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tl.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff",
                    ".webp", ".gif")
# What operating systems, archivers and NAS boxes leave in folders: metadata, never data (a
# Synology @eaDir holds a thumbnail of every photo), so never a class, an image or a finding.
OS_FILES = ("thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx", "@eadir", "$recycle.bin",
            "system volume information", "lost+found")
ORIENTATION = 0x0112  # the EXIF tag phone cameras set instead of rotating the pixels
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
    """Hidden (.DS_Store, macOS ._* resource forks, .ipynb_checkpoints) or other systems'
    metadata (Thumbs.db, desktop.ini, a zip's __MACOSX/, a NAS's @eaDir/): ignored everywhere,
    silently."""
    return name.startswith(".") or name.lower() in OS_FILES


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def upright(im: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: a phone photo stored sideways with an EXIF
    Orientation tag is rotated (PIL's `ImageOps.exif_transpose`)."""
    try:
        orientation = im.getexif().get(ORIENTATION, 1)
    except Exception:  # an unreadable EXIF block says nothing about orientation
        return im
    return ImageOps.exif_transpose(im) if orientation not in (1, None) else im


def to_rgb(im: Image.Image) -> Image.Image:
    im = upright(im)
    if im.mode in WIDE_GRAY:
        # PIL's own conversion clips 16-bit values at 255, which turns most pixels white.
        wide = np.clip(np.asarray(im, dtype=np.float64), 0, 65535) / 257.0
        return Image.fromarray(np.rint(wide).astype(np.uint8)).convert("RGB")
    if im.mode == "F":
        return _float_to_rgb(im)
    if im.mode in ("P", "PA", "LA", "RGBA") or "transparency" in im.info:
        im = im.convert("RGBA")  # palette/alpha images composite predictably this way
    return im.convert("RGB")


def _float_to_rgb(im: Image.Image) -> Image.Image:
    """32-bit float pixels (TIFFs from scientific and medical tools): read as fractions of
    white when within [0, 1], as 8-bit levels within [0, 255]. Any other range (CT's
    Hounsfield units, say) has no one meaning as brightness, so it is refused by name rather
    than clipped (PIL's own conversion makes most such images black)."""
    a = np.asarray(im, dtype=np.float64)
    low, high = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise ValueError(f"32-bit float pixels from {low:g} to {high:g}: tl reads float images with values "
                         "in [0, 1] or [0, 255]; convert it to 8 or 16 bits with the windowing you want")
    scaled = a * 255.0 if high <= 1.0 else a
    return Image.fromarray(np.rint(scaled).astype(np.uint8)).convert("RGB")


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


def check_images(paths: list[Path]) -> dict[Path, str | None]:
    """Each file's verdict: None if it decodes as an image, else why not. PIL's decode runs on
    worker threads beside one pass of libjpeg's own check over the JPEGs (PIL and
    torchvision's decoders release the GIL)."""
    with warnings.catch_warnings():  # set once, here: the worker threads share these filters
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", module="torchvision")  # its decoders' deprecation notice
        with ThreadPoolExecutor(max(1, min(4, (os.cpu_count() or 2) - 1))) as pool:
            opened = pool.map(_opens, paths)  # submitted now, runs beside the pass below
            damaged = jpeg_damage([p for p in paths if _jpeg_magic(p)])
            opened = list(opened)
    return {p: why or damaged.get(p) for p, why in zip(paths, opened)}


def _opens(path: Path) -> str | None:
    """None if PIL opens and decodes the file, else why not."""
    if path.is_symlink() and not path.exists():
        return f"broken symlink (to {display(os.readlink(path))})"
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))  # JPEG decodes at reduced scale: a full check, faster
            to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return f"larger than PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): {e}"
    except Exception as e:  # PIL raises many types for bad files
        return f"{type(e).__name__}: {e}"
    return None


def _jpeg_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(3) == b"\xff\xd8\xff"  # what PIL recognises a JPEG by
    except OSError:
        return False


_STDERR = threading.Lock()


def jpeg_damage(paths: list[Path]) -> dict[Path, str]:
    """libjpeg's own verdict on each JPEG's compressed data, for those it has one on.

    PIL silences libjpeg's warnings, so damaged bytes mid-file decode to garbage without a
    word. torchvision's libjpeg reports them ("Corrupt JPEG data: ...") on the process's
    stderr only: that stream is caught once for the whole pass (per file, catching it cost
    twice the decode), and each file's report is what was written while it decoded."""
    import torch
    from torchvision.io import decode_jpeg

    found: dict[Path, str] = {}
    rest: list[str] = []
    if not paths:
        return found
    with _STDERR, tempfile.TemporaryFile() as caught:
        fd = caught.fileno()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(fd, 2)
        try:
            for path in paths:
                start = os.lseek(fd, 0, os.SEEK_CUR)  # fd 2 shares this offset
                failed = None
                try:
                    decode_jpeg(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8))
                except OSError:  # gone or unreadable: PIL's check says so
                    continue
                except RuntimeError as e:
                    failed = str(e).splitlines()[-1].strip()
                sys.stderr.flush()
                end = os.lseek(fd, 0, os.SEEK_CUR)
                lines = os.pread(fd, end - start, start).decode("utf-8", "replace").splitlines()
                damage = [x for x in lines if x.startswith("Corrupt JPEG data")]
                rest += [x for x in lines if x not in damage]
                if damage:
                    found[path] = f"corrupt JPEG data ({damage[0].split(':', 1)[1].strip()})"
                elif failed:
                    found[path] = f"corrupt JPEG data ({failed})"
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    if rest:  # not ours to swallow
        print("\n".join(rest), file=sys.stderr)
    return found


def checked(paths: list[Path]) -> dict[Path, str | None]:
    """`check_images` of the files, remembered per (path, size, mtime, ctime, inode) in the
    user's cache: every file is decoded in full once (twice for a JPEG), and a sweep's later
    runs, or a rerun, over unchanged files only stat them. Any write to a file changes its
    ctime, which no tool can set back, so an edited file is checked again."""
    stamps = {p: _stamp(p) for p in paths}
    key = hashlib.sha256("\n".join(f"{os.fsencode(p.absolute())!r}\t{stamps[p]}" for p in paths).encode())
    memo = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tl" / "checked" / key.hexdigest()[:32]
    try:
        bad = json.loads(memo.read_text())
        return {p: bad.get(str(i)) for i, p in enumerate(paths)}
    except (OSError, ValueError):
        pass
    verdicts = check_images(paths)
    bad = {str(i): why for i, p in enumerate(paths) if (why := verdicts[p])}
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=memo.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(bad, f)
        os.replace(tmp, memo)
    except OSError:  # a read-only cache only costs the checks next time
        pass
    return verdicts


def _stamp(p: Path) -> str:
    try:
        st = p.stat()
    except OSError:
        return "missing"
    return f"{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\t{st.st_ino}"


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
    found, skipped = [], []
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
                if not is_image_name(name):
                    skipped.append((path, f"not an image file extension ({Path(name).suffix or 'none'})"))
                    continue
                found.append((path, idx))
    verdicts = checked([p for p, _ in found])
    samples = [(p, idx) for p, idx in found if not verdicts[p]]
    skipped += [(p, verdicts[p]) for p, _ in found if verdicts[p]]
    if skipped:
        names = ", ".join(display(p) for p, _ in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log.warning("skipping %d unreadable file(s) under %s: %s%s (first: %s)",
                    len(skipped), display(root), names, more, skipped[0][1])
    return Scan(classes, samples, skipped)
