"""`freeze` without redoing work: the frozen backbone's features, computed once.

Under `freeze` the backbone is a fixed function in eval mode, so its output for an image is
the same every epoch and in every run of a sweep that shares backbone, data and transform.
Features are captured at the input of the classifier (one rule for every family), kept in
memory for the run's epochs and on disk for later runs, keyed by everything they depend on.
The head trains with the same optimizer, schedule and head dropout as without the cache; only
augmentation differs, limited to the cached views.

Augmentation: `views=K` caches K views of each training image: view 0 is the plain val-style
view, views 1.. are random augmentations; each epoch draws one view per image.

The key holds the data's content (a digest of every file's bytes, of the data as it is on
disk once a bundled or downloaded dataset is written), so an edit that keeps a file's size and
mtime is still a miss. An entry keeps the seconds its miss spent reading the data and running
the backbone: what each hit saves (`feature_pass_seconds`). A writer killed mid-save leaves a
temp file; the next use removes it once its writer is gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tl.data import checks, datasets
from tl.data.transforms import val_transform
from tl.models import backbones, folding
from tl.models.backbones import Backbone
from tl.runtime import io, seeding
from tl.runtime.io import load_tensors
from tl.runtime.paths import resolve
from tl.runtime.precision import autocast
from tl.data import identity

log = logging.getLogger(__name__)

FORMAT = 7  # bump when what is cached, or how, changes (7: batch norms folded; one view decoded at val's size)
# A temp file its writer stopped writing this long ago is dead, whoever wrote it (another host
# sharing the cache, or a name without a writer): saving even a large entry takes seconds.
STALE_TEMP_SECONDS = 15 * 60


@dataclass
class Features:
    classes: list[str]
    train: torch.Tensor          # [views, N, D]
    train_targets: torch.Tensor  # [N]
    val: torch.Tensor            # [M, D]
    val_targets: torch.Tensor    # [M]
    report_metrics: dict[str, int]  # the data check's findings, logged on a cache hit too
    report_files: dict[str, str]
    shown: dict[int, torch.Tensor]  # val index -> its uint8 image, for the diagnostics' grid
    test: torch.Tensor | None = None          # [T, D], when the dataset has a test split
    test_targets: torch.Tensor | None = None  # [T]
    shown_test: dict[int, torch.Tensor] = field(default_factory=dict)
    layout: dict | None = None  # `tl.layout.summary` of the splits the features came from
    pass_seconds: float | None = None  # what the miss spent reading the data and running the backbone


def applicable(cfg) -> bool:
    s = cfg.strategy
    fc = s.get("feature_cache") or {}
    return s.name == "freeze" and s.bn in ("eval", "frozen") and bool(fc.get("enabled", False))


def cache_dir(cfg) -> Path:
    return resolve(cfg.strategy.feature_cache.dir)


def _weights_identity(cfg) -> dict:
    w = cfg.model.get("weights")
    if not w:
        return {"pretrained": bool(cfg.model.pretrained)}
    st = resolve(w).stat()
    return {"weights": str(resolve(w)), "size": st.st_size, "mtime": st.st_mtime_ns}


def cache_key(cfg, backbone: Backbone, precision: str) -> str:
    """The entry's name: everything the features depend on. Call it once the data is on disk
    (`datasets.materialise`): it reads the data's content."""
    from omegaconf import OmegaConf

    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    root = resolve(cfg.dataset.root)
    parts = {
        "format": FORMAT,
        "model": {"source": backbone.source, "name": backbone.name, **_weights_identity(cfg)},
        "data": asdict(backbone.data),
        "dataset": dataset,
        # the whole tree's bytes: train, val and test folders alike (and `dataset` above: splits,
        # fractions). Remembered per fingerprint that includes ctime, which no edit keeps.
        "content": identity.content_digest(root),
        "views": int(cfg.strategy.feature_cache.views),
        # The seed moves the features only through the random views, or a backbone's random
        # init: a freeze sweep over seeds of pretrained weights shares one entry.
        "seed": int(cfg.trainer.seed) if _seeded(cfg) else None,
        "precision": precision,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _seeded(cfg) -> bool:
    random_weights = not (cfg.model.get("pretrained") or cfg.model.get("weights"))
    return int(cfg.strategy.feature_cache.views) > 1 or random_weights


def load(path: Path) -> Features | None:
    if not path.is_file():
        return None
    try:
        return Features(**load_tensors(path))
    except Exception as e:  # a damaged cache file is recomputed, never trusted
        log.warning("ignoring unreadable feature cache %s (%s)", path, e)
        return None


def save(path: Path, feats: Features) -> None:
    """Written to a temp file named for its writer (host, pid), then renamed over `path`:
    readers never see half a file, and a later run can tell a dead writer's leftovers."""
    io.atomic_write(path, lambda f: torch.save(asdict(feats), f), writer=_writer())


def _writer() -> str:
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(folder: Path, now: float | None = None) -> list[Path]:
    """Delete the temp files of saves that will never finish: their writer (on this host) is
    gone, or nothing has written to them for `STALE_TEMP_SECONDS`. Returns what it removed."""
    now = time.time() if now is None else now
    host = socket.gethostname().replace(".", "_")
    removed = []
    for tmp in folder.glob(".*.pt.*.tmp"):
        writer = tmp.name.split(".pt.", 1)[1].split(".", 1)[0]
        w_host, _, pid = writer.rpartition("-")
        try:
            dead = (w_host == host and pid.isdigit() and not _alive(int(pid))) or \
                now - tmp.stat().st_mtime > STALE_TEMP_SECONDS
            if dead:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # its writer finished, or another run removed it
            continue
    if removed:
        log.info("removed %d temp file(s) of feature-cache saves that were killed, in %s", len(removed), folder)
    return removed


@torch.inference_mode()
def _pass(model, head, loader, prep, rt) -> tuple[torch.Tensor, torch.Tensor]:
    captured = []
    hook = head.register_forward_pre_hook(lambda m, args: captured.append(args[0].flatten(1).float().cpu()))
    targets = []
    try:
        for x, y in loader:
            x, y = prep(x, y)
            with autocast(rt.device, rt.autocast_dtype):
                model(x)
            targets.append(y.cpu())
    finally:
        hook.remove()
    return torch.cat(captured), torch.cat(targets)


def _inference_copy(backbone: Backbone, rt) -> tuple[torch.nn.Module, int]:
    """The backbone with its batch norms folded into its convolutions (`tl.models.folding`),
    checked on a fixed random batch: the features it gives are the model's."""
    size = backbone.data.input_size
    probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(rt.device)
    if rt.channels_last:
        probe = probe.contiguous(memory_format=torch.channels_last)
    model, folds = folding.fold_batchnorms(backbone.model.eval(), probe, backbone.head[-1])
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, folds


def extract(backbone: Backbone, splits, report, views: int, rt, prep, seed: int, batch_size: int,
            train_view_transform, val_view_transform) -> Features:
    """Run the frozen backbone once over val and over `views` views of train."""
    model, folds = _inference_copy(backbone, rt)
    if folds:
        log.info("frozen pass: %d batch norm(s) folded into their convolutions", folds)
    head = model.get_submodule(backbone.head[-1])

    def loader(ds, generator=None):
        return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0, generator=generator)

    val, val_y = _pass(model, head, loader(splits.val), prep, rt)
    train_views, train_y = [], None
    aug = splits.train.transform
    try:
        for v in range(views):
            splits.train.transform = val_view_transform if v == 0 else train_view_transform
            torch.manual_seed(seed * 1000 + v)  # each view's random crops, reproducibly
            feats, train_y = _pass(model, head, loader(splits.train), prep, rt)
            train_views.append(feats)
    finally:
        splits.train.transform = aug
    from tl.training.diagnostics import MAX_SAMPLES, spread

    def kept(ds):  # plain tensors: a tv_tensors.Image subclass would not load under weights_only
        return {i: ds[i][0].as_subclass(torch.Tensor).clone() for i in sorted(spread(len(ds), MAX_SAMPLES))}

    # Test last, with its own generator: it draws nothing from the RNG the head's training uses.
    test, test_y = (_pass(model, head, loader(splits.test, torch.Generator()), prep, rt)
                    if splits.test is not None else (None, None))
    return Features(splits.classes, torch.stack(train_views), train_y, val, val_y,
                    dict(report.metrics), dict(report.files), kept(splits.val),
                    test, test_y, kept(splits.test) if splits.test is not None else {}, splits.layout)


def obtain(cfg, backbone: Backbone, rt, prep) -> tuple[Features, str, Path]:
    """The frozen backbone's features of `cfg`'s data, as every freeze run and `tl rank` get
    them: from the on-disk cache, else computed (the head swapped for the data's classes first)
    and saved there. Returns (features, "hit" or "miss", the cache file)."""
    t, fc = cfg.trainer, cfg.strategy.feature_cache
    folder = cache_dir(cfg)
    if folder.is_dir():
        remove_stale_temps(folder)
    # The key reads the data as it is on disk: a bundled or downloaded dataset is written first.
    present = datasets.materialise(cfg.dataset).exists()
    path = folder / f"{cache_key(cfg, backbone, rt.precision)}.pt" if present else None
    feats = load(path) if path is not None else None
    if feats is not None:
        if not backbone.head:
            backbones.attach_head(backbone, len(feats.classes), cfg.model.get("stages"))
        backbone.model.to(rt.device)
        return feats, "hit", path
    started = time.perf_counter()
    # One view is the val-style crop of each train image: decoded at val's size, not with the
    # room random crops need (no resize of every train image at the pass).
    splits = datasets.build_splits(cfg.dataset, backbone.data, t.image_cache_mb, t.image_cache_scale,
                                   train_side=backbone.data.resize_size if int(fc.views) == 1 else None)
    if not backbone.head:  # a later phase keeps the head trained so far
        backbones.attach_head(backbone, len(splits.classes), cfg.model.get("stages"))
    backbone.model.to(rt.device)  # channels_last, where it pays, for the copy that runs (`extract`)
    feats = extract(backbone, splits, checks.check(splits), int(fc.views), rt, prep, int(t.seed),
                    t.get("eval_batch_size") or t.batch_size, train_view_transform=splits.train.transform,
                    val_view_transform=val_transform(backbone.data))
    feats.pass_seconds = time.perf_counter() - started
    path = path or folder / f"{cache_key(cfg, backbone, rt.precision)}.pt"  # data downloaded just now
    save(path, feats)
    return feats, "miss", path


class FeatureBatches:
    """Batches of cached features: with a seed, a fresh shuffle and one random view per image
    each epoch, drawn from (seed, epoch) alone; without, in order."""

    def __init__(self, feats: torch.Tensor, targets: torch.Tensor, batch_size: int, seed: int | None = None):
        self.feats = feats if feats.dim() == 3 else feats.unsqueeze(0)
        self.targets, self.batch_size, self.seed = targets, batch_size, seed
        self.generator = None
        if seed is not None:
            self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        if self.seed is not None:
            self.generator = torch.Generator().manual_seed(seeding.epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        return -(-self.targets.numel() // self.batch_size)

    def __iter__(self):
        n = self.targets.numel()
        if self.generator is None:
            order, views = torch.arange(n), torch.zeros(n, dtype=torch.long)
        else:
            order = torch.randperm(n, generator=self.generator)
            views = torch.randint(self.feats.shape[0], (n,), generator=self.generator)
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield self.feats[views[idx], idx], self.targets[idx]
