"""Which folders of a dataset are its train, val and test splits, and how the missing ones are
carved.

Split folders are recognised by name, case-insensitively (`Train/`, `valid/`, `Validation/`,
`dev/`, `testing/`, ...), or named explicitly with `dataset.splits.{train,val,test}`. Every
layout has one outcome:

- train + val (+ test) folders: used as they are;
- train + test, no val: val carved from train (`val_fraction`), test untouched;
- train only, or a bare tree of class folders: val (and test, with `test_fraction`) carved;
- split-like folders beside folders that are not (is `cats/` a class or a split?), or a class
  folder holding only folders (a nesting mistake): an error naming them and the fix.

Carving is stratified and seeded: per class, a fixed fraction, the same files every time.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tl.data import imagefiles
from tl.data.imagefiles import display, is_hidden
from tl.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
NAMES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing"),
}
MAX_CLASSES_SHOWN = 10


@dataclass
class Layout:
    """Where each split comes from. `folders[s]` is the split's folder, or None when it is
    carved (from train's folder, or from `root` itself when it is a bare class tree)."""

    root: Path
    folders: dict[str, Path | None]

    @property
    def tree(self) -> bool:
        """No split folders: root's own folders are the classes."""
        return self.folders["train"] is None

    @property
    def source(self) -> Path:
        """The folder carved splits come from."""
        return self.folders["train"] or self.root


def split_of(name: str) -> str | None:
    """The split a folder's name says it is, if any."""
    low = name.lower()
    return next((s for s, names in NAMES.items() if low in names), None)


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if not is_hidden(e.name) and e.is_dir())


def _names(folders) -> str:
    return ", ".join(f"{display(f)}/" for f in folders)


def _top(folder: Path, root: Path) -> str | None:
    """The folder directly under `root` that holds `folder` (None when it lies elsewhere)."""
    try:
        return folder.relative_to(root).parts[0]
    except (ValueError, IndexError):
        return None


def _explicit(root: Path, splits) -> dict[str, Path]:
    named = {}
    for s in SPLITS:
        value = splits.get(s) if splits is not None else None
        if value in (None, ""):
            continue
        folder = root / str(value)
        if not folder.is_dir():
            raise ConfigError(
                f"dataset.splits.{s}={str(value)!r}: there is no folder {display(folder)!r}. "
                f"Folders under {display(root)!r}: {_names(_subfolders(root)) or 'none'}")
        named[s] = folder
    return named


def find(root: Path, splits=None) -> Layout:
    """The layout of `root`. `splits` maps split -> folder name (relative to root) for the
    splits named explicitly (`dataset.splits`); the others are found by name."""
    if not root.is_dir():
        raise DataError(f"dataset folder {display(root)!r} does not exist: point dataset.root at a "
                        "folder of split or class folders")
    named = _explicit(root, splits)
    top = _subfolders(root)
    claimed = {_top(f, root) for f in named.values()}
    by_name: dict[str, list[str]] = defaultdict(list)
    for name in top:
        s = split_of(name)
        if s is not None and s not in named and name not in claimed:
            by_name[s].append(name)
    for s, found in by_name.items():
        if len(found) > 1:
            raise DataError(
                f"{display(root)!r} has {len(found)} folders that look like the {s} split: "
                f"{_names(found)}. Keep one (move the others out of {display(root)}), or name it "
                f"with dataset.splits.{s}=FOLDER")
    folders = {s: named.get(s) or (root / by_name[s][0] if by_name.get(s) else None) for s in SPLITS}
    used = [f for f in folders.values() if f is not None]
    if not used:
        layout = Layout(root, folders)
        check_class_folders(root, root)
        return layout
    used_top = {_top(f, root) for f in used} - {None}
    others = [n for n in top if n not in used_top]
    if others:
        raise DataError(
            f"the top level of {display(root)!r} mixes split folders ({_names(sorted(used_top))}) with "
            f"folders that are not splits ({_names(others)}): are those classes or splits? "
            "If they are classes, move them into each split folder; if one is a split, name it with "
            "dataset.splits.train=FOLDER, dataset.splits.val=FOLDER or dataset.splits.test=FOLDER; "
            "otherwise move them out of dataset.root")
    if folders["train"] is None:
        raise DataError(
            f"{display(root)!r} has split folder(s) {_names(f.name for f in used)} but no train folder. "
            f"Name it train/ (or training/), or set dataset.splits.train=FOLDER")
    for f in used:
        check_class_folders(f, root)
    return Layout(root, folders)


def check_class_folders(folder: Path, root: Path) -> None:
    """A class folder that holds folders and no files is a nesting mistake: the classes (or
    the splits) are one level further down."""
    for cls in _subfolders(folder):
        path = folder / cls
        has_file, inner = False, []
        for e in os.scandir(path):
            if is_hidden(e.name):
                continue
            if e.is_dir():
                inner.append(e.name)
            else:
                has_file = True
                break
        if has_file or not inner:
            continue
        inner.sort()
        hint = (f"set dataset.root={display(path)}" if any(split_of(n) for n in inner)
                else f"if {_names(inner[:5])} are the classes, set dataset.root={display(path)} "
                     f"(or move them up one level); if they are parts of class {display(cls)!r}, "
                     "put its images directly in it")
        raise DataError(
            f"class folder {display(path.relative_to(root))}/ under {display(root)!r} holds only "
            f"folders ({_names(inner[:5])}{' ...' if len(inner) > 5 else ''}) and no images: a nesting "
            f"mistake? {hint}")


def carve(samples: list[tuple[Path, int]], val_fraction, test_fraction, seed: int):
    """Stratified, seeded (train, val, test): per class, files sorted then shuffled with
    `seed`; val takes the first `val_fraction` of them, test the next `test_fraction`, train the
    rest. A fraction of None carves nothing; each split keeps at least one image per class
    where the class has enough."""
    by_class = defaultdict(list)
    for s in samples:
        by_class[s[1]].append(s)
    rng = random.Random(seed)
    train, val, test = [], [], []
    for c in sorted(by_class):
        items = sorted(by_class[c], key=lambda s: str(s[0]))
        rng.shuffle(items)
        n_val = _count(len(items), val_fraction)
        n_test = _count(len(items) - n_val, test_fraction, of=len(items))
        val.extend(items[:n_val])
        test.extend(items[n_val:n_val + n_test])
        train.extend(items[n_val + n_test:])
    return train, val, test


def _count(available: int, fraction, of: int | None = None) -> int:
    if fraction is None or available <= 1:
        return 0
    return min(available - 1, max(1, round((of or available) * fraction)))


def _is_fraction(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < 1


def check_fractions(layout: Layout, val_fraction, test_fraction) -> None:
    """`dataset.val_fraction` must carve val when the layout has no val folder;
    `dataset.test_fraction` (optional) carves test when it has no test folder."""
    if val_fraction is not None and not _is_fraction(val_fraction):
        raise ConfigError(f"dataset.val_fraction={val_fraction!r} must be a number in (0, 1)")
    if test_fraction is not None and not _is_fraction(test_fraction):
        raise ConfigError(f"dataset.test_fraction={test_fraction!r} must be a number in (0, 1), "
                          "or null for no test split")
    if layout.folders["val"] is None and val_fraction is None:
        raise ConfigError(
            f"dataset.val_fraction is null, but {display(layout.root)!r} has no train/ and val/ folders to "
            f"split by (no val folder named {', '.join(NAMES['val'])}): set dataset.val_fraction=0.2 (say), "
            "name the val folder with dataset.splits.val=FOLDER, or arrange the images as root/{train,val}/<class>/")
    carved = ((val_fraction if layout.folders["val"] is None else 0)
              + ((test_fraction or 0) if layout.folders["test"] is None else 0))
    if carved >= 1:
        raise ConfigError(f"dataset.val_fraction={val_fraction} + dataset.test_fraction={test_fraction} "
                          "leave nothing to train on: their sum must be below 1")


def collect(layout: Layout, val_fraction, test_fraction, seed: int):
    """Scan the layout's folders: (classes, {split: samples}, skipped files, {split: how it was
    made}). Classes are train's; a class only in val or test is an error."""
    check_fractions(layout, val_fraction, test_fraction)
    source = layout.source
    classes = imagefiles.class_folders(source)
    for s in ("val", "test"):
        if layout.folders[s] is not None:
            imagefiles.split_classes(source, layout.folders[s])
    whole = imagefiles.scan(source, classes)
    skipped = list(whole.skipped)
    found = {}
    for s in ("val", "test"):
        if layout.folders[s] is not None:
            scan = imagefiles.scan(layout.folders[s], classes)
            found[s], skipped = scan.samples, skipped + scan.skipped
    carve_val = None if "val" in found else val_fraction
    carve_test = None if "test" in found else test_fraction
    train, val, test = carve(whole.samples, carve_val, carve_test, seed)
    samples = {"train": train, "val": found.get("val", val), "test": found.get("test", test)}
    label = f"{display(source.name)}/"
    how = {"train": label}
    for s, fraction in (("val", carve_val), ("test", carve_test)):
        if s in found:
            how[s] = f"{display(layout.folders[s].name)}/"
        elif fraction is not None:
            how[s] = f"{fraction:.0%} of {label} (seed {seed})"
        else:
            how[s] = None
    return classes, samples, skipped, how


def summary(classes: list[str], samples: dict[str, list], how: dict[str, str | None], root: Path) -> dict:
    """What `layout.json` holds: per split, where it came from and its images per class."""
    out = {"root": display(root), "classes": [display(c) for c in classes], "splits": {}}
    for s in SPLITS:
        items = samples.get(s) or []
        if how.get(s) is None and not items:
            out["splits"][s] = None
            continue
        counts = [0] * len(classes)
        for _, y in items:
            counts[y] += 1
        out["splits"][s] = {"from": how.get(s) or "", "images": len(items),
                            "per_class": dict(zip(out["classes"], counts))}
    return out


def line(summary: dict) -> str:
    """`layout: train=train/ 2000 (cats 1000, dogs 1000) | val=validation/ 1000 (...) | test: none`"""
    parts = []
    for s in SPLITS:
        d = summary["splits"].get(s)
        if d is None:
            parts.append(f"{s}: none")
            continue
        per = list(d["per_class"].items())
        shown = ", ".join(f"{c} {n}" for c, n in per[:MAX_CLASSES_SHOWN])
        if len(per) > MAX_CLASSES_SHOWN:
            shown += f", ... {len(per) - MAX_CLASSES_SHOWN} more classes"
        parts.append(f"{s}={d['from']} {d['images']} ({shown})")
    return "layout: " + " | ".join(parts)
