"""Datasets (hymenoptera, imagefolder, cifar10, digits) as train/val splits, and their loaders."""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from tl.data import ahead, decoded, layout, sources
from tl.data.batches import EpochLoader
from tl.data.imagefiles import load_rgb
from tl.data.transforms import train_transform, val_transform  # noqa: F401 (re-exported)
from tl.errors import ConfigError, DataError, not_one_of
from tl.models.backbones import DataConfig
from tl.runtime import parallel, seeding
from tl.runtime.paths import resolve

log = logging.getLogger(__name__)

DATASETS = ("hymenoptera", "imagefolder", "cifar10", "digits")


class ImageFiles(Dataset):
    def __init__(self, samples: list[tuple[Path, int]], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.transform(load_rgb(path)), label

    @property
    def targets(self) -> list[int]:
        return [y for _, y in self.samples]


class ArrayImages(Dataset):
    """In-memory HWC uint8 images (CIFAR-10)."""

    def __init__(self, images, targets: list[int], transform):
        self.images, self._targets, self.transform = images, list(targets), transform

    def __len__(self) -> int:
        return len(self._targets)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self._targets[i]

    @property
    def targets(self) -> list[int]:
        return self._targets


@dataclass
class Splits:
    classes: list[str]
    train: Dataset
    val: Dataset
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    test: Dataset | None = None  # evaluated once, at the end, on the val-selected checkpoint
    layout: dict | None = None   # `tl.layout.summary`: where each split came from, images per class


def _limit(samples: list, limit, seed: int, key=lambda s: s[1]) -> list:
    if limit is None:
        return samples
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"dataset.limit_per_class={limit!r} must be a positive integer or null")
    by_class = defaultdict(list)
    for s in samples:
        by_class[key(s)].append(s)
    rng = random.Random(seed)
    kept = []
    for c in sorted(by_class):
        items = list(by_class[c])
        rng.shuffle(items)
        kept.extend(items[:limit])
    return sorted(kept, key=lambda s: (key(s), str(s[0])))


def _check_classes(classes: list[str], train: list, val: list, root: Path) -> None:
    if len(classes) < 2:
        raise DataError(f"{str(root)!r} has {len(classes)} class folder(s) {classes}: a classifier needs at least 2")
    counts = defaultdict(int)
    for _, y in train:
        counts[y] += 1
    empty = [classes[i] for i in range(len(classes)) if counts[i] == 0]
    if empty:
        raise DataError(f"class folder(s) {empty} under {str(root)!r} have no readable training images: "
                        "add images or remove the folder(s)")
    if not val:
        raise DataError(f"{str(root)!r} gives no validation images: add some, or lower dataset.val_fraction's rounding by adding images")


def _train_tf(cfg, data: DataConfig):
    scale = tuple(cfg.get("crop_scale") or (0.08, 1.0))
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"dataset.crop_scale={list(scale)} must be [low, high] with 0 < low <= high <= 1")
    return train_transform(data, bool(cfg.get("hflip", True)), scale)


def _image_dataset(samples, transform, side: int, cache_bytes: int):
    if cache_bytes <= 0:
        return ImageFiles(samples, transform), 0
    images = decoded.decode_all([p for p, _ in samples], side, cache_bytes)
    ds = decoded.DecodedImages(samples, images, side, transform)
    return ds, ds.cached_bytes


def decoded_side(data: DataConfig, cache_scale: float) -> int:
    """The shorter side train images are decoded at: room for random resized crops."""
    return math.ceil(data.input_size * cache_scale)


def scan(cfg, root: Path):
    """The dataset's layout and what `layout.collect` finds in it: every image file checked
    (`tl.data.ahead` calls this too, so its child fills the same cache entries)."""
    found = layout.find(root, cfg.get("splits"))
    return found, layout.collect(found, cfg.get("val_fraction"), cfg.get("test_fraction"),
                                 int(cfg.get("split_seed", 0)))


def _folder_splits(cfg, root: Path, data: DataConfig, cache_mb: float, cache_scale: float,
                   train_side: int | None) -> Splits:
    seed = int(cfg.get("split_seed", 0))
    ahead.wait()  # a child checking these files as the run started: its results are this scan's
    found, (classes, samples, skipped, how) = scan(cfg, root)
    layout.note_set_aside(found)
    train = _limit(samples["train"], cfg.get("limit_per_class"), seed)
    val = _limit(samples["val"], cfg.get("limit_per_class"), seed + 1)
    test = _limit(samples["test"], cfg.get("limit_per_class"), seed + 2)
    _check_classes(classes, train, val, root)
    summary = layout.summary(classes, {"train": train, "val": val, "test": test}, how, root, found.set_aside)
    log.info("%s", layout.line(summary))  # before decoding: a wrong layout shows at once
    # Train images keep room for random resized crops; val needs exactly the resize size.
    budget = int(cache_mb * 2**20)
    train_ds, used = _image_dataset(train, _train_tf(cfg, data), train_side or decoded_side(data, cache_scale), budget)
    val_ds, used_val = _image_dataset(val, val_transform(data), data.resize_size, budget - used)
    test_ds = None
    if test:
        test_ds, _ = _image_dataset(test, val_transform(data), data.resize_size, budget - used - used_val)
    return Splits(classes, train_ds, val_ds, skipped, test_ds, summary)


def _cifar_splits(cfg, root: Path, data: DataConfig) -> Splits:
    train, val = sources.load_cifar10(root, bool(cfg.get("download", True)))
    seed = 0

    def pick(ds, s):
        idx = list(range(len(ds.targets)))
        keep = _limit([(i, t) for i, t in zip(idx, ds.targets)], cfg.get("limit_per_class"), s)
        ids = [i for i, _ in keep]
        return ds.data[ids], [ds.targets[i] for i in ids]

    tx, ty = pick(train, seed)
    vx, vy = pick(val, seed + 1)
    summary = layout.summary(list(train.classes), {"train": [(None, y) for y in ty], "val": [(None, y) for y in vy]},
                             {"train": "data_batch_1-5", "val": "test_batch"}, root)
    log.info("%s", layout.line(summary))
    return Splits(list(train.classes), ArrayImages(tx, ty, _train_tf(cfg, data)),
                  ArrayImages(vx, vy, val_transform(data)), layout=summary)


def materialise(cfg) -> Path:
    """The dataset's root once its files are on disk: `digits` written out and `hymenoptera`
    downloaded on first use (CIFAR-10 downloads as it is read)."""
    if cfg.name not in DATASETS:
        raise not_one_of("dataset.name", cfg.name, DATASETS)
    if cfg.get("root") in (None, "", "???"):
        raise ConfigError(f"dataset.root is not set: dataset={cfg.name} needs dataset.root=PATH")
    root = resolve(cfg.root)
    if cfg.name == "hymenoptera":
        return sources.ensure_hymenoptera(cfg, root)
    if cfg.name == "digits":
        return sources.ensure_digits(root, int(cfg.image_size))
    return root


def build_splits(cfg, data: DataConfig, cache_mb: float = 0, cache_scale: float = 1.5,
                 train_side: int | None = None) -> Splits:
    """Train/val datasets of uint8 images. `cache_mb` > 0 decodes image files once into memory,
    train's at `train_side` (default `decoded_side`)."""
    root = materialise(cfg)
    if cfg.name == "cifar10":
        return _cifar_splits(cfg, root, data)
    return _folder_splits(cfg, root, data, cache_mb, cache_scale, train_side)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    import numpy as np

    np.random.seed(seed)


def in_memory(ds) -> bool:
    return isinstance(ds, ArrayImages) or (
        isinstance(ds, decoded.DecodedImages) and all(x is not None for x in ds.images))


def loaders(splits: Splits, batch_size: int, eval_batch_size: int, num_workers: int,
            generator: torch.Generator, pin_memory: bool):
    common = dict(num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=_seed_worker,
                  persistent_workers=num_workers > 0,
                  multiprocessing_context=parallel.loader_context(num_workers))
    # Order and augmentation of epoch e depend on (seed, e) only: call train.set_epoch(e).
    train = EpochLoader(seeding.SeededSamples(splits.train), batch_size=batch_size,
                       sampler=seeding.EpochSampler(len(splits.train), generator.initial_seed()),
                       generator=generator, drop_last=False, **common)
    # Its own generator: drawing worker seeds from the global RNG would shift dropout's stream.
    val = EpochLoader(splits.val, batch_size=eval_batch_size, shuffle=False,
                     generator=torch.Generator(), **common)
    return train, val


def eval_loader(ds, eval_batch_size: int, num_workers: int, pin_memory: bool) -> EpochLoader:
    """In order, with its own generator: evaluating it (test, at the end) draws nothing from
    the global RNG the training run depends on."""
    return EpochLoader(ds, batch_size=eval_batch_size, shuffle=False, generator=torch.Generator(),
                      num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=_seed_worker,
                      multiprocessing_context=parallel.loader_context(num_workers))
