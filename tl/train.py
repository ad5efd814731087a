"""`python -m tl.train` / `tl-train`: one run, or a sweep with `-m`.

`train(cfg)` is the plain core (tests call it directly); `main()` is the thin Hydra entry.
"""

from __future__ import annotations

import logging
import math
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from tl import (backbones, data, decoded, device_batches, diagnostics, features, progress, runtime,
                strategies, sweep, tracking, validate)
from tl.engine import Preprocess, evaluate, train_one_epoch
from tl.errors import ConfigError
from tl.optim import build_optimizer, build_scheduler

log = logging.getLogger("tl")


def run_name(cfg: DictConfig) -> str:
    return cfg.tracking.get("run_name") or f"{cfg.model.name}-{cfg.strategy.name}-{cfg.dataset.name}"


def _hydra_job() -> tuple[list[str], Path | None]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], None
    hc = HydraConfig.get()
    return list(hc.overrides.task), Path(hc.runtime.output_dir)


def reproduce_command(overrides: list[str]) -> str:
    return " ".join(["python -m tl.train", "hydra.mode=RUN", *(shlex.quote(o) for o in overrides)])


def train(cfg: DictConfig, extra_tags: dict[str, str] | None = None) -> float:
    """Train one model as `cfg` says, logging everything to MLflow. Returns best val accuracy.

    `extra_tags` are set on the run on top of (and over) its own, e.g. by `tl reproduce`."""
    uri = tracking.resolve_uri(cfg.tracking)
    parent = sweep.parent_for_job()
    if parent is not None:
        client, exp_id = tracking.client_for(uri), parent.experiment_id
    else:
        client = tracking.prepare_store(uri)
        exp_id = tracking.experiment_id(client, cfg.tracking.experiment, uri)
    overrides, out_dir = _hydra_job()
    tags = {
        "tl.model": str(cfg.model.name), "tl.strategy": str(cfg.strategy.name),
        "tl.dataset": str(cfg.dataset.name), "tl.overrides": " ".join(overrides),
        "tl.command": reproduce_command(overrides), "tl.git_commit": tracking.git_commit(),
        **{f"tl.version.{k}": v for k, v in tracking.package_versions().items()},
        **(extra_tags or {}),
    }
    if parent is not None:
        tags["mlflow.parentRunId"] = parent.run_id
    run_id = client.create_run(exp_id, run_name=run_name(cfg), tags=tags).info.run_id
    try:
        # The config first, so even a run that fails at once says what it was.
        tracking.log_params(client, run_id, tracking.flatten(cfg))
        best = fit(cfg, client, run_id, out_dir)
    except KeyboardInterrupt:
        client.set_tag(run_id, "tl.error", "KeyboardInterrupt")
        client.set_terminated(run_id, "KILLED")
        raise
    except BaseException as e:
        client.set_tag(run_id, "tl.error_type", type(e).__name__)
        client.set_tag(run_id, "tl.error", f"{type(e).__name__}: {e}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    if parent is None:
        print("Open the run in MLflow:\n" + tracking.ui_hint(uri, exp_id, [run_id]))
    return best


def fit(cfg: DictConfig, client, run_id: str, out_dir: Path | None) -> float:
    validate.check(cfg)
    rt = runtime.resolve_runtime(cfg.trainer)
    generator = runtime.seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    t0 = time.perf_counter()
    backbone = backbones.create(cfg.model)
    model = backbone.model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prep = Preprocess(rt, backbone.data.mean, backbone.data.std)
    if features.applicable(cfg):
        job = _feature_job(cfg, backbone, rt, prep, generator)
    else:
        job = _image_job(cfg, backbone, rt, prep, generator)
    if cfg.trainer.get("compile"):
        # Compiling pays off only for long runs: minutes of compile time on a CPU.
        job = replace(job, step_model=torch.compile(job.step_model))
    setup_seconds = time.perf_counter() - t0

    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.trainer.epochs)
    tracking.log_params(client, run_id, {
        **job.rt.as_params(), **job.plan.as_params(),
        "runtime.feature_cache": job.feature_cache,
        "data.classes": ",".join(job.classes), "data.num_classes": len(job.classes),
        "data.train_images": job.n_train, "data.val_images": job.n_val,
        "data.input_size": backbone.data.input_size, "data.resize_size": backbone.data.resize_size,
        "data.mean": backbone.data.mean, "data.std": backbone.data.std,
        "data.image_cache_mb": round(job.cached_bytes / 2**20, 1),
        "model.num_stages": len(backbone.stages), "model.head": ",".join(backbone.head),
    })
    client.set_tag(run_id, "tl.precision", f"{rt.precision} ({rt.precision_reason})")
    tracking.log_metrics(client, run_id, {"skipped_files": len(job.skipped),
                                          "setup_seconds": setup_seconds}, step=0)

    work = Path(tempfile.mkdtemp(prefix="tl-run-"))
    try:
        (work / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        client.log_artifact(run_id, str(work / "config.yaml"))
        if out_dir is not None and (out_dir / ".hydra").is_dir():
            client.log_artifacts(run_id, str(out_dir / ".hydra"), "hydra")
        if job.skipped:
            (work / "skipped_files.txt").write_text("".join(f"{p}\t{why}\n" for p, why in job.skipped))
            client.log_artifact(run_id, str(work / "skipped_files.txt"))
        best = _epochs(cfg, client, run_id, model, job, optimizer, scheduler, work)
        diagnostics.log_best(client, run_id, model, work / "best.pt", job)
        return best
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Job:
    """What the epoch loop steps: the module that trains, its batches, and how to prepare them."""

    step_model: torch.nn.Module
    train_loader: object
    val_loader: object
    prep: Preprocess
    rt: runtime.Runtime
    plan: strategies.Plan
    classes: list[str]
    skipped: list
    n_train: int
    n_val: int
    cached_bytes: int = 0
    feature_cache: str = "off"


def _image_job(cfg, backbone, rt, prep, generator) -> Job:
    t = cfg.trainer
    splits = data.build_splits(cfg.dataset, backbone.data, t.image_cache_mb, t.image_cache_scale)
    backbones.attach_head(backbone, len(splits.classes), cfg.model.get("stages"))
    backbone.model.to(rt.device)
    plan = strategies.apply(backbone, cfg.strategy)
    in_memory = data.in_memory(splits.train) and data.in_memory(splits.val)
    rt = replace(rt, num_workers=runtime.pick_num_workers(t.num_workers, in_memory))
    eval_bs = t.get("eval_batch_size") or t.batch_size
    train_loader, val_loader = data.loaders(splits, t.batch_size, eval_bs, rt.num_workers, generator,
                                            pin_memory=rt.device.type == "cuda")
    if data.in_memory(splits.val):
        images, targets = device_batches.pretransform(splits.val)
        val_loader = device_batches.TensorBatches(images.to(rt.device), targets.to(rt.device), eval_bs)
    if _augment_on_device(t, rt, splits):
        d = backbone.data
        train_loader = device_batches.DeviceTrainBatches(
            splits.train.images, splits.train.targets, math.ceil(d.input_size * t.image_cache_scale),
            d.input_size, t.batch_size, rt.device, generator,
            scale=cfg.dataset.get("crop_scale") or (0.08, 1.0), hflip=bool(cfg.dataset.get("hflip", True)))
    cached = sum(getattr(ds, "cached_bytes", 0) for ds in (splits.train, splits.val))
    return Job(backbone.model, train_loader, val_loader, prep, rt, plan, splits.classes,
               splits.skipped, len(splits.train), len(splits.val), cached)


def _augment_on_device(t, rt, splits) -> bool:
    """`auto`: on a GPU, when every training image is decoded in memory."""
    spec = t.get("device_augment", "auto")
    possible = isinstance(splits.train, decoded.DecodedImages) and data.in_memory(splits.train)
    if spec == "auto":
        return possible and rt.device.type == "cuda"
    if spec and not possible:
        raise ConfigError("trainer.device_augment=true needs every training image decoded in memory: "
                          "raise trainer.image_cache_mb, or set trainer.device_augment=auto")
    return bool(spec)


def _feature_job(cfg, backbone, rt, prep, generator) -> Job:
    t, fc = cfg.trainer, cfg.strategy.feature_cache
    path = features.cache_dir(cfg) / f"{features.cache_key(cfg, backbone, rt.precision)}.pt"
    feats, state = features.load(path), "hit"
    if feats is None:
        state = "miss"
        splits = data.build_splits(cfg.dataset, backbone.data, t.image_cache_mb, t.image_cache_scale)
        backbones.attach_head(backbone, len(splits.classes), cfg.model.get("stages"))
        backbone.model.to(rt.device)
        feats = features.extract(backbone, splits, int(fc.views), rt, prep, int(t.seed),
                                 t.get("eval_batch_size") or t.batch_size,
                                 train_view_transform=splits.train.transform,
                                 val_view_transform=data.val_transform(backbone.data))
        features.save(path, feats)
    else:
        backbones.attach_head(backbone, len(feats.classes), cfg.model.get("stages"))
        backbone.model.to(rt.device)
    log.info("feature cache %s: %s", state, path)
    plan = strategies.apply(backbone, cfg.strategy)
    head = backbone.model.get_submodule(backbone.head[-1])
    train_loader = features.FeatureBatches(feats.train, feats.train_targets, t.batch_size, generator)
    val_loader = features.FeatureBatches(feats.val, feats.val_targets, t.get("eval_batch_size") or t.batch_size)
    rt = replace(rt, num_workers=0, channels_last=False)
    return Job(head, train_loader, val_loader, Preprocess(rt), rt, plan, feats.classes,
               feats.skipped, feats.train_targets.numel(), feats.val_targets.numel(),
               feats.train.numel() * feats.train.element_size(), state)


def _epochs(cfg, client, run_id, model, job: Job, optimizer, scheduler, work: Path) -> float:
    t = cfg.trainer
    criterion = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda") if job.rt.precision == "fp16" else None
    best, best_epoch, total = -1.0, 0, 0.0
    ckpt = work / "best.pt"
    for epoch in progress.epochs(t.epochs):
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(job.step_model, progress.batches(job.train_loader, "train"), optimizer,
                             criterion, job.rt, job.plan, job.prep, scaler)
        va = evaluate(job.step_model, progress.batches(job.val_loader, "val"), criterion, job.rt, job.prep)
        scheduler.step(epoch)
        seconds = tr.seconds + va.seconds
        total += seconds
        if va.acc > best:
            best, best_epoch = va.acc, epoch
            torch.save({"model": model.state_dict(), "epoch": epoch, "val_acc": va.acc,
                        "classes": job.classes}, ckpt)
        tracking.log_metrics(client, run_id, {
            "train_loss": tr.loss, "train_acc": tr.acc, "val_loss": va.loss, "val_acc": va.acc,
            "lr": lr, "epoch_seconds": seconds,
            "images_per_second": (tr.images + va.images) / max(seconds, 1e-9),
            "train_images_per_second": tr.images / max(tr.seconds, 1e-9),
        }, step=epoch)
        log.info("epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.2e  %.1fs",
                 epoch, t.epochs, tr.loss, tr.acc, va.loss, va.acc, lr, seconds)
    tracking.log_metrics(client, run_id, {"best_val_acc": best, "best_epoch": best_epoch,
                                          "train_seconds": total}, step=t.epochs)
    if cfg.tracking.get("log_checkpoint", True) and ckpt.exists():
        client.log_artifact(run_id, str(ckpt), "checkpoints")
    log.info("%s: best val acc %.4f at epoch %d", run_name(cfg), best, best_epoch)
    return best


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    return train(cfg)


def main() -> None:
    try:
        _hydra_main()
    finally:
        sweep.finish_all()


if __name__ == "__main__":
    main()
