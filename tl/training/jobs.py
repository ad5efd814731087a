"""What a run trains: the backbone with its new head, the batches it steps through (images,
cached features or device tensors), its optimizer and schedule, and the facts it logs.

`build(cfg)` does the same for a new run and a resumed one, so both feed the same loop."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace

import torch
from omegaconf import DictConfig, OmegaConf

from tl.data import checks, datasets, decoded, device_batches
from tl.data.batches import Batches
from tl.data.transforms import val_transform
from tl.errors import ConfigError
from tl.models import backbones
from tl.runtime import machine, parallel
from tl.tracking import sweep
from tl.training import features, strategies, validate
from tl.training.engine import Preprocess
from tl.training.optim import build_optimizer, build_scheduler

log = logging.getLogger("tl")


@dataclass
class Job:
    """What the epoch loop steps: the module that trains, its batches, and how to prepare them."""

    step_model: torch.nn.Module
    train_loader: Batches
    val_loader: Batches
    prep: Preprocess
    rt: machine.Runtime
    plan: strategies.Plan
    classes: list[str]
    report: checks.Report
    n_train: int
    n_val: int
    cached_bytes: int = 0
    feature_cache: str = "off"
    shown: dict = field(default_factory=dict)  # val index -> uint8 image, when batches are features
    # Cached features: only a linear head steps. Its matmuls are too small to split across
    # threads (idle waits between threads cost more than the math, 50x on a busy machine),
    # and it trains in fp32: autocast would only add casts to an exact, cheap matmul.
    threads: int | None = None
    head_precision: str | None = None
    head_only: dict | None = None  # what checkpoints hold when only the head changes (see checkpoints)

    @property
    def loop_rt(self) -> machine.Runtime:
        """The runtime the epoch loop and the diagnostics run in."""
        if self.head_precision is None:
            return self.rt
        return replace(self.rt, precision=self.head_precision,
                       precision_reason=f"the head on cached {self.rt.precision} features")


@dataclass
class Setup:
    """Everything a run needs before its first epoch, built from its config alone."""

    model: torch.nn.Module
    job: Job
    optimizer: torch.optim.Optimizer
    scheduler: object
    generator: torch.Generator
    facts: dict  # data, model and runtime facts: logged by a new run, re-checked by a resumed one
    setup_seconds: float


def build(cfg: DictConfig) -> Setup:
    validate.check(cfg)
    parallel.limit_threads()
    rt = machine.resolve_runtime(cfg.trainer)
    generator = machine.seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    t0 = time.perf_counter()
    # A sweep's runs in this process share builds; a single run has nothing to share them with.
    backbone = backbones.create(cfg.model, reuse=sweep.in_multirun())
    # Before the data is read: a bad frozen_stages costs no scan of the images.
    frozen = validate.frozen_stages(cfg, backbone)
    model = backbone.model.to(rt.device)
    on_features = features.applicable(cfg)
    if rt.channels_last and not on_features:  # a feature job converts only if it runs the backbone
        model = model.to(memory_format=torch.channels_last)
    prep = Preprocess(rt, backbone.data.mean, backbone.data.std)
    make = _feature_job if on_features else _image_job
    job = make(cfg, backbone, rt, prep, generator, frozen)
    if cfg.trainer.get("compile"):
        # Compiling pays off only for long runs: minutes of compile time on a CPU.
        job = replace(job, step_model=torch.compile(job.step_model))
    setup_seconds = time.perf_counter() - t0

    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.trainer.epochs)
    facts = {
        **job.rt.as_params(), **job.plan.as_params(),
        **({"runtime.head_precision": job.head_precision} if job.head_precision else {}),
        "data.classes": ",".join(job.classes), "data.num_classes": len(job.classes),
        "data.train_images": job.n_train, "data.val_images": job.n_val,
        "data.input_size": backbone.data.input_size, "data.resize_size": backbone.data.resize_size,
        "data.mean": backbone.data.mean, "data.std": backbone.data.std,
        "model.num_stages": len(backbone.stages), "model.head": ",".join(backbone.head),
    }
    return Setup(model, job, optimizer, scheduler, generator, facts, setup_seconds)


def _image_job(cfg, backbone, rt, prep, generator, frozen: int) -> Job:
    t = cfg.trainer
    splits = datasets.build_splits(cfg.dataset, backbone.data, t.image_cache_mb, t.image_cache_scale)
    backbones.attach_head(backbone, len(splits.classes), cfg.model.get("stages"))
    backbone.model.to(rt.device)
    plan = strategies.apply(backbone, cfg.strategy, frozen)
    in_memory = datasets.in_memory(splits.train) and datasets.in_memory(splits.val)
    rt = replace(rt, num_workers=machine.pick_num_workers(t.num_workers, in_memory))
    eval_bs = t.get("eval_batch_size") or t.batch_size
    train_loader, val_loader = datasets.loaders(splits, t.batch_size, eval_bs, rt.num_workers, generator,
                                                pin_memory=rt.device.type == "cuda")
    if datasets.in_memory(splits.val):
        images, targets = device_batches.pretransform(splits.val)
        val_loader = device_batches.TensorBatches(images.to(rt.device), targets.to(rt.device), eval_bs)
    if _augment_on_device(t, rt, splits):
        d = backbone.data
        train_loader = device_batches.DeviceTrainBatches(
            splits.train.images, splits.train.targets, math.ceil(d.input_size * t.image_cache_scale),
            d.input_size, t.batch_size, rt.device, int(t.seed),
            scale=cfg.dataset.get("crop_scale") or (0.08, 1.0), hflip=bool(cfg.dataset.get("hflip", True)))
    cached = sum(getattr(ds, "cached_bytes", 0) for ds in (splits.train, splits.val))
    return Job(backbone.model, train_loader, val_loader, prep, rt, plan, splits.classes,
               checks.check(splits), len(splits.train), len(splits.val), cached)


def _augment_on_device(t, rt, splits) -> bool:
    """`auto`: on a GPU, when every training image is decoded in memory."""
    spec = t.get("device_augment", "auto")
    possible = isinstance(splits.train, decoded.DecodedImages) and datasets.in_memory(splits.train)
    if spec == "auto":
        return possible and rt.device.type == "cuda"
    if spec and not possible:
        raise ConfigError("trainer.device_augment=true needs every training image decoded in memory: "
                          "raise trainer.image_cache_mb, or set trainer.device_augment=auto")
    return bool(spec)


def _feature_job(cfg, backbone, rt, prep, generator, frozen: int) -> Job:
    t, fc = cfg.trainer, cfg.strategy.feature_cache
    path = features.cache_dir(cfg) / f"{features.cache_key(cfg, backbone, rt.precision)}.pt"
    feats, state = features.load(path), "hit"
    if feats is None:
        state = "miss"
        splits = datasets.build_splits(cfg.dataset, backbone.data, t.image_cache_mb, t.image_cache_scale)
        backbones.attach_head(backbone, len(splits.classes), cfg.model.get("stages"))
        backbone.model.to(rt.device)
        if rt.channels_last:
            backbone.model.to(memory_format=torch.channels_last)
        feats = features.extract(backbone, splits, checks.check(splits), int(fc.views), rt, prep, int(t.seed),
                                 t.get("eval_batch_size") or t.batch_size,
                                 train_view_transform=splits.train.transform,
                                 val_view_transform=val_transform(backbone.data))
        features.save(path, feats)
    else:
        backbones.attach_head(backbone, len(feats.classes), cfg.model.get("stages"))
        backbone.model.to(rt.device)
    log.info("feature cache %s: %s", state, path)
    plan = strategies.apply(backbone, cfg.strategy, frozen)
    head = backbone.model.get_submodule(backbone.head[-1])
    train_loader = features.FeatureBatches(feats.train, feats.train_targets, t.batch_size, int(t.seed))
    val_loader = features.FeatureBatches(feats.val, feats.val_targets, t.get("eval_batch_size") or t.batch_size)
    rt = replace(rt, num_workers=0, channels_last=False)
    return Job(head, train_loader, val_loader, Preprocess(rt), rt, plan, feats.classes,
               checks.Report(dict(feats.report_metrics), dict(feats.report_files)),
               feats.train_targets.numel(), feats.val_targets.numel(),
               feats.train.numel() * feats.train.element_size(), state, feats.shown,
               threads=1, head_precision="fp32",
               head_only={"module": backbone.head[-1], "backbone": {
                   "source": backbone.source, "name": backbone.name, "feature_cache": path.stem,
                   "config": OmegaConf.to_container(cfg.model, resolve=True)}})
