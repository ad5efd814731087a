"""What is wrong with a dataset's splits but need not stop a run: each finding is warned
about with the files or classes named, and logged with the run as a count (metric) and, where
there are files, a list (artifact)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tl.data.imagefiles import display

log = logging.getLogger(__name__)


@dataclass
class Report:
    metrics: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # artifact name -> text


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def train_val_duplicates(train: list[Path], val: list[Path]) -> list[tuple[Path, Path]]:
    """(val file, train file) pairs with the same bytes. Only files whose size matches a file
    in the other split are hashed: for most datasets that is a stat per file."""
    train_by_size = defaultdict(list)
    for p in train:
        train_by_size[os.path.getsize(p)].append(p)
    hashed: dict[int, dict[str, Path]] = {}
    pairs = []
    for p in val:
        size = os.path.getsize(p)
        if size not in train_by_size:
            continue
        if size not in hashed:
            hashed[size] = {}
            for q in train_by_size[size]:
                hashed[size].setdefault(_digest(q), q)
        twin = hashed[size].get(_digest(p))
        if twin is not None:
            pairs.append((p, twin))
    return pairs


def check(splits) -> Report:
    report = Report({"skipped_files": len(splits.skipped)})
    if splits.skipped:
        report.files["skipped_files.txt"] = "".join(f"{display(p)}\t{why}\n" for p, why in splits.skipped)

    in_val = set(splits.val.targets)
    missing = [c for i, c in enumerate(splits.classes) if i not in in_val]
    report.metrics["val_missing_classes"] = len(missing)
    if missing:
        log.warning("the val split has no images of %d class(es) %s: val accuracy says nothing about "
                    "them. Add val images of them (or, with a single folder tree, more images per class)",
                    len(missing), [display(c) for c in missing])

    train_files = _files(splits.train)
    if train_files:
        _leakage(report, train_files, splits.val, "train", "val", "val accuracy reads high")
        # Leakage into test inflates the one number meant to be unbiased.
        if getattr(splits, "test", None) is not None:
            _leakage(report, train_files, splits.test, "train", "test", "test accuracy reads high")
    val_files = _files(splits.val)
    if val_files and getattr(splits, "test", None) is not None:
        # The epoch chosen on val is then partly chosen on test images.
        _leakage(report, val_files, splits.test, "val", "test", "the epoch is chosen partly on test images")
    return report


def _files(split) -> list:
    return [p for p, _ in getattr(split, "samples", [])]


def _leakage(report: Report, reference: list, split, ref: str, name: str, effect: str) -> None:
    """Files of `split` byte-identical to files of the `ref` split: counted, listed and warned about."""
    files = _files(split)
    if not files:
        return
    pairs = train_val_duplicates(reference, files)
    key = f"{ref}_{name}_duplicates"
    report.metrics[key] = len(pairs)
    if pairs:
        report.files[f"{key}.txt"] = "".join(f"{display(v)}\t{display(t)}\n" for v, t in pairs)
        log.warning("%d %s image(s) are byte-identical to %s images (%s/%s leakage: %s), e.g. %s = %s; all "
                    "are listed in the run's %s.txt. Remove them from one split", len(pairs), name, ref, ref,
                    name, effect, display(pairs[0][0]), display(pairs[0][1]), key)
