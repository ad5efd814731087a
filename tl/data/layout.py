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

import logging
import os
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tl.data import imagefiles
from tl.data.imagefiles import display, is_hidden, is_image_name
from tl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
NAMES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing"),
}
# Words in the names of folders of images without labels, set aside beside a train folder.
UNLABELLED = ("pred", "predict", "prediction", "predictions", "unlabeled", "unlabelled", "inference")
MAX_CLASSES_SHOWN = 10


@dataclass
class Layout:
    """Where each split comes from. `folders[s]` is the split's folder, or None when it is
    carved (from train's folder, or from `root` itself when it is a bare class tree)."""

    root: Path
    folders: dict[str, Path | None]
    set_aside: list[Path] = field(default_factory=list)  # folders not used: unlabelled, or look-alikes

    @property
    def tree(self) -> bool:
        """No split folders: root's own folders are the classes."""
        return self.folders["train"] is None

    @property
    def source(self) -> Path:
        """The folder carved splits come from."""
        return self.folders["train"] or self.root


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[_\- .]+", name.lower()) if t]


def split_of(name: str) -> str | None:
    """The split a folder's name says it is, if any: the whole name (`Validation`) or one of
    its words (`seg_train`, `training_set`, `Train-Images`, `validation data`). A name with
    words of two splits (`train_test`) says none."""
    low = name.lower()
    exact = next((s for s, names in NAMES.items() if low in names), None)
    if exact is not None:
        return exact
    words = set(_tokens(name))
    found = {s for s, names in NAMES.items() if words & set(names)}
    return found.pop() if len(found) == 1 else None


def _unlabelled_name(name: str) -> bool:
    """Names datasets give their folders of images without labels (`seg_pred`, `test`)."""
    return split_of(name) is not None or bool(set(_tokens(name)) & set(UNLABELLED))


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if not is_hidden(e.name) and e.is_dir())


def _kind(folder: Path) -> str:
    """"images" when `folder` holds image files itself, else "folders" when it holds folders,
    else "empty". Other files (Thumbs.db, README.txt, labels.csv) decide nothing."""
    has_dirs = False
    for e in os.scandir(folder):
        if is_hidden(e.name):
            continue
        if e.is_dir():
            has_dirs = True
        elif is_image_name(e.name):
            return "images"
    return "folders" if has_dirs else "empty"


def _unwrap(folder: Path) -> Path:
    """`seg_train/seg_train/<classes>` (how archives often unpack): the inner folder, when it
    is the only content of one of the same name."""
    while _kind(folder) == "folders":
        inner = _subfolders(folder)
        if len(inner) != 1 or inner[0].lower() != folder.name.lower():
            break
        folder = folder / inner[0]
    return folder


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


def _by_name(root: Path, top: list[str], named: dict, claimed: set):
    """Split folders found by name: ({split: [folders]}, unlabelled candidates, look-alikes of
    a split named explicitly). A name that is only one of a folder's words (`test_tube`) is a
    split only when the folder holds folders: a folder of images with such a name is a class.
    Folders holding images directly with a split's or a prediction set's name are candidates
    to set aside (unlabelled)."""
    by_name: dict[str, list[Path]] = defaultdict(list)
    flat, aside = [], []
    for name in top:
        if name in claimed:
            continue
        folder = _unwrap(root / name)
        kind = _kind(folder)
        s = split_of(name)
        if kind == "images" and _unlabelled_name(name):
            flat.append(folder)
        if s is None or (kind != "folders" and name.lower() not in NAMES[s]):
            continue
        if s in named:  # the user named this split's folder: a look-alike is not used
            aside.append(folder)
        else:
            by_name[s].append(folder)
    return by_name, flat, aside


def find(root: Path, splits=None) -> Layout:
    """The layout of `root`. `splits` maps split -> folder name (relative to root) for the
    splits named explicitly (`dataset.splits`); the others are found by name. Beside a train
    folder, folders of images without class folders (Kaggle's `test/`, Intel's `seg_pred/`)
    are set aside, unlabelled, and so are folders that look like a split named explicitly."""
    if not root.is_dir():
        raise DataError(f"dataset folder {display(root)!r} does not exist: point dataset.root at a "
                        "folder of split or class folders")
    named = _explicit(root, splits)
    top = _subfolders(root)
    claimed = {_top(f, root) for f in named.values()}
    by_name, flat, aside = _by_name(root, top, named, claimed)
    if "train" in named or [f for f in by_name.get("train", []) if f not in flat]:
        aside += [f for f in flat if f not in aside]
        by_name = {s: [f for f in found if f not in flat] for s, found in by_name.items()}
    for s, found in by_name.items():
        if len(found) > 1:
            raise DataError(
                f"{display(root)!r} has {len(found)} folders that look like the {s} split: "
                f"{_names(f.relative_to(root) for f in found)}. Keep one (move the others out of "
                f"{display(root)}), or name it with dataset.splits.{s}=FOLDER (the others are then "
                "set aside)")
    folders = {s: named.get(s) or (by_name[s][0] if by_name.get(s) else None) for s in SPLITS}
    aside_top = {_top(f, root) for f in aside}
    used = [f for f in folders.values() if f is not None]
    if not used:
        check_class_folders(root, root)
        return Layout(root, folders, aside)
    used_top = {_top(f, root) for f in used} - {None}
    others = [n for n in top if n not in used_top and n not in aside_top]
    if others:
        raise DataError(
            f"the top level of {display(root)!r} mixes split folders ({_names(sorted(used_top))}) with "
            f"folders that are not splits ({_names(others)}): are those classes or splits? "
            "If they are classes, move them into each split folder; if one is a split, name it with "
            "dataset.splits.train=FOLDER, dataset.splits.val=FOLDER or dataset.splits.test=FOLDER; "
            "otherwise move them out of dataset.root")
    if folders["train"] is None:
        raise DataError(
            f"{display(root)!r} has split folder(s) {_names(f.relative_to(root) for f in used)} but no "
            "train folder. Name it train/ (or training/), or set dataset.splits.train=FOLDER")
    for s, f in folders.items():
        if f is not None:
            check_class_folders(f, root, s)
    return Layout(root, folders, aside)


def check_class_folders(folder: Path, root: Path, split: str | None = None) -> None:
    """A class folder that holds folders and no images is a nesting mistake: the classes (or
    the splits) are one level further down. The fix suggested never points `dataset.root`
    into a val or test split: training there would train on the images meant to judge it."""
    for cls in _subfolders(folder):
        path = folder / cls
        if _kind(path) != "folders":
            continue
        inner = _subfolders(path)
        rel = display(path.relative_to(root))
        if split is None:
            hint = (f"set dataset.root={display(path)}" if any(split_of(n) for n in inner)
                    else f"if {_names(inner[:5])} are the classes, set dataset.root={display(path)} "
                         f"(or move them up one level); if they are parts of class {display(cls)!r}, "
                         "put its images directly in it")
        elif split == "train" and any(split_of(n) for n in inner):
            hint = f"set dataset.root={display(path)}"
        else:
            hint = (f"if {_names(inner[:5])} are the {split} split's classes, set dataset.splits.{split}={rel} "
                    f"(or move them up one level); if they are parts of class {display(cls)!r}, "
                    "put its images directly in it")
        raise DataError(
            f"class folder {rel}/ under {display(root)!r} holds only "
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


def summary(classes: list[str], samples: dict[str, list], how: dict[str, str | None], root: Path,
            set_aside=()) -> dict:
    """What `layout.json` holds: per split, where it came from and its images per class; and
    the folders set aside, unused."""
    out = {"root": display(root), "classes": [display(c) for c in classes], "splits": {}}
    if set_aside:
        out["set_aside"] = [f"{display(f.relative_to(root))}/" for f in set_aside]
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
    if summary.get("set_aside"):
        parts.append(f"set aside: {' '.join(summary['set_aside'])}")
    return "layout: " + " | ".join(parts)


def note_set_aside(found: Layout) -> None:
    """Say which folders are not used, and why, before anything trains."""
    if found.set_aside:
        log.warning("not using %s under %s: folder(s) of images without class folders (unlabelled), "
                    "or a look-alike of a split named in dataset.splits. Their images are neither "
                    "trained on nor evaluated", _names(f.relative_to(found.root) for f in found.set_aside),
                    display(found.root))
