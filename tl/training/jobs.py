"""What a run trains: the backbone with its new head, the batches it steps through (images,
cached features or device tensors), its optimizer and schedule, and the facts it logs.

`build(cfg)` does the same for a new run and a resumed one, so both feed the same loop. A
strategy in phases (`tl.training.phases`) starts in its first phase; `enter(setup, phase)`
moves to a later one, keeping the weights and rebuilding freezing, batches, optimizer and
schedule from that phase's config alone."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from tl.data import checks, datasets, decoded, device_batches, layout
from tl.data.batches import Batches
from tl.errors import ConfigError
from tl.models import backbones
from tl.runtime import machine, parallel, timeline
from tl.sweeps import sweep
from tl.training import features, param_groups, phases, strategies, validate
from tl.training.engine import Preprocess

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
    test_loader: Batches | None = None  # evaluated once, at the end; None without a test split
    n_test: int = 0
    shown_test: dict = field(default_factory=dict)
    layout: dict | None = None  # `tl.data.layout.summary` of the splits
    # Cached features: only a linear head steps. Its matmuls are too small to split across
    # threads (idle waits between threads cost more than the math, 50x on a busy machine),
    # and it trains in fp32: autocast would only add casts to an exact, cheap matmul.
    threads: int | None = None
    head_precision: str | None = None
    head_only: dict | None = None  # what checkpoints hold when only the head changes (see checkpoints)
    feature_pass_seconds: float | None = None  # on cached features: what the backbone pass took (a hit: saved)

    @property
    def cost_metrics(self) -> dict[str, float]:
        """`feature_pass_seconds` on cached features: a miss's own backbone pass (data read
        included), or on a hit the pass its entry's miss took: what the hit saved."""
        if self.feature_pass_seconds is None:
            return {}
        return {"feature_pass_seconds": float(self.feature_pass_seconds)}

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
    backbone: backbones.Backbone
    rt: machine.Runtime  # the machine's choices, before a job adapts them (workers, layout)
    prep: Preprocess
    schedule: list[phases.Phase]  # one phase for a plain strategy
    phase: phases.Phase  # the one `job`, `optimizer` and `scheduler` belong to
    frozen: list[int]  # frozen stages per phase, checked against the model before any data


def start(cfg: DictConfig) -> tuple[machine.Runtime, torch.Generator, backbones.Backbone]:
    """How every use of a config's backbone begins (a run, a frozen pass that scores it): the
    config checked, threads limited, the machine's runtime, seeded RNGs, the backbone built."""
    validate.check(cfg)
    parallel.limit_threads()
    rt = machine.resolve_runtime(cfg.trainer)
    generator = machine.seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    # A sweep's runs in this process share builds; a single run has nothing to share them with.
    with timeline.part("model"):
        backbone = backbones.create(cfg.model, reuse=sweep.in_multirun())
    return rt, generator, backbone


def build(cfg: DictConfig) -> Setup:
    t0 = time.perf_counter()
    rt, generator, backbone = start(cfg)
    cfg = split_seeded(cfg)
    schedule = phases.schedule(cfg)
    for note in phases.adjusted(schedule):
        log.warning("strategy=%s: phase %s, to fit trainer.epochs=%d (logged as strategy.phase_epochs)",
                    cfg.strategy.name, note, cfg.trainer.epochs)
    # Before the data is read: a bad frozen_stages, in any phase, costs no scan of the images.
    frozen = validate.frozen_stages(cfg, schedule, backbone)
    model = backbone.model.to(rt.device)
    prep = Preprocess(rt, backbone.data.mean, backbone.data.std)
    job = _job(schedule[0].cfg, backbone, rt, prep, generator, frozen[0])
    setup_seconds = time.perf_counter() - t0

    optimizer, scheduler = param_groups.optimizer_and_schedule(model, backbone, schedule[0])
    facts = {
        **job.rt.as_params(), **job.plan.as_params(),
        **({"runtime.head_precision": job.head_precision} if job.head_precision else {}),
        "data.classes": ",".join(job.classes), "data.num_classes": len(job.classes),
        "data.train_images": job.n_train, "data.val_images": job.n_val, "data.test_images": job.n_test,
        "data.input_size": backbone.data.input_size, "data.resize_size": backbone.data.resize_size,
        "data.mean": backbone.data.mean, "data.std": backbone.data.std,
        "model.num_stages": len(backbone.stages), "model.head": ",".join(backbone.head),
    }
    if job.layout:
        facts["data.layout"] = layout.line(job.layout)
    if phases.phased(cfg):
        facts["strategy.phase_epochs"] = phases.lengths(schedule)
    if cfg.dataset.get("split_seed") is not None:
        facts["data.split_seed"] = int(cfg.dataset.split_seed)  # the one the carved splits were drawn with
    return Setup(model, job, optimizer, scheduler, generator, facts, setup_seconds, backbone, rt, prep,
                 schedule, schedule[0], frozen)


def split_seeded(cfg: DictConfig) -> DictConfig:
    """`dataset.resample_splits=true`: the carved val/test splits are drawn with `trainer.seed`,
    so seeds replicate training and split noise together. Otherwise `dataset.split_seed` fixes
    them and seeds vary the training alone (init, order, augmentations)."""
    if not cfg.dataset.get("resample_splits"):
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.dataset.split_seed = int(cfg.trainer.seed)
    return cfg


def enter(s: Setup, phase: phases.Phase) -> Setup:
    """A later phase: the weights trained so far, its own freezing, batches, optimizer and LR
    schedule; no LR changes that its config does not say."""
    for hook in s.job.plan.hooks:
        hook.remove()
    job = _job(phase.cfg, s.backbone, s.rt, s.prep, s.generator, s.frozen[phase.index])
    optimizer, scheduler = param_groups.optimizer_and_schedule(s.model, s.backbone, phase)
    log.info("phase %d (%s) from epoch %d: %s", phase.index, phase.name, phase.start, phases.describe([phase]))
    return replace(s, job=job, optimizer=optimizer, scheduler=scheduler, phase=phase)


def _job(cfg, backbone, rt, prep, generator, frozen: int) -> Job:
    on_features = features.applicable(cfg)
    if rt.channels_last and not on_features:  # a feature job converts only if it runs the backbone
        backbone.model.to(memory_format=torch.channels_last)
    make = _feature_job if on_features else _image_job
    with timeline.part("features" if on_features else "data"):  # layout, decoding (, the frozen pass)
        job = make(cfg, backbone, rt, prep, generator, frozen)
    if cfg.trainer.get("compile"):
        # Compiling pays off only for long runs: minutes of compile time on a CPU.
        job = replace(job, step_model=torch.compile(job.step_model))
    return job


def _image_job(cfg, backbone, rt, prep, generator, frozen: int) -> Job:
    t = cfg.trainer
    splits = datasets.build_splits(cfg.dataset, backbone.data, t.image_cache_mb, t.image_cache_scale)
    if not backbone.head:  # a later phase keeps the head trained so far
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
            splits.train.images, splits.train.targets, datasets.decoded_side(d, t.image_cache_scale),
            d.input_size, t.batch_size, rt.device, int(t.seed),
            scale=cfg.dataset.get("crop_scale") or (0.08, 1.0), hflip=bool(cfg.dataset.get("hflip", True)))
    cached = sum(getattr(ds, "cached_bytes", 0) for ds in (splits.train, splits.val, splits.test) if ds is not None)
    test_loader = None
    if splits.test is not None:
        if datasets.in_memory(splits.test):
            images, targets = device_batches.pretransform(splits.test)
            test_loader = device_batches.TensorBatches(images.to(rt.device), targets.to(rt.device), eval_bs)
        else:
            test_loader = datasets.eval_loader(splits.test, eval_bs, rt.num_workers, rt.device.type == "cuda")
    return Job(backbone.model, train_loader, val_loader, prep, rt, plan, splits.classes,
               checks.check(splits), len(splits.train), len(splits.val), cached,
               test_loader=test_loader, n_test=0 if splits.test is None else len(splits.test), layout=splits.layout)


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
    t = cfg.trainer
    feats, state, path = features.obtain(cfg, backbone, rt, prep)
    if state == "hit" and feats.layout:  # a miss printed it as it read the folders
        log.info("%s", layout.line(feats.layout))
    log.info("feature cache %s: %s", state, path)
    plan = strategies.apply(backbone, cfg.strategy, frozen)
    head = backbone.model.get_submodule(backbone.head[-1])
    train_loader = features.FeatureBatches(feats.train, feats.train_targets, t.batch_size, int(t.seed))
    val_loader = features.FeatureBatches(feats.val, feats.val_targets, t.get("eval_batch_size") or t.batch_size)
    test_loader = None
    if feats.test is not None:
        test_loader = features.FeatureBatches(feats.test, feats.test_targets, t.get("eval_batch_size") or t.batch_size)
    rt = replace(rt, num_workers=0, channels_last=False)
    return Job(head, train_loader, val_loader, Preprocess(rt), rt, plan, feats.classes,
               checks.Report(dict(feats.report_metrics), dict(feats.report_files)),
               feats.train_targets.numel(), feats.val_targets.numel(),
               feats.train.numel() * feats.train.element_size(), state, feats.shown,
               test_loader=test_loader, n_test=0 if feats.test is None else feats.test_targets.numel(),
               shown_test=feats.shown_test, layout=feats.layout,
               threads=1, head_precision="fp32", feature_pass_seconds=feats.pass_seconds,
               head_only={"module": backbone.head[-1], "backbone": {
                   "source": backbone.source, "name": backbone.name, "feature_cache": path.stem,
                   "config": OmegaConf.to_container(cfg.model, resolve=True)}})
