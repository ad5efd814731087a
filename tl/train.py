"""`python -m tl.train` / `tl-train`: one run, or a sweep with `-m`.

`train(cfg)` is the plain core (tests call it directly); `main()` is the thin Hydra entry.
"""

from __future__ import annotations

import logging
import math
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from tl import (backbones, checkpointing, data, datacheck, decoded, device_batches, diagnostics,
                features, param_groups, parallel, paths, phases, progress, resume, runtime, signals,
                strategies, sweep, tracking, validate)
from tl.engine import Preprocess, evaluate, train_one_epoch
from tl.errors import ConfigError

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

    With `resume=RUN_ID` it continues that run instead (see `tl.resume`). `extra_tags` are set
    on the run on top of (and over) its own, e.g. by `tl reproduce`."""
    overrides, out_dir = _hydra_job()
    if cfg.get("resume"):
        client, run_id, cfg = resume.reopen(cfg, overrides)
        return _run(cfg, client, run_id, None, client.get_run(run_id).info.experiment_id)
    uri = tracking.resolve_uri(cfg.tracking)
    parent = sweep.parent_for_job()
    if parent is not None:
        client, exp_id = tracking.client_for(uri), parent.experiment_id
    else:
        client = tracking.prepare_store(uri)
        exp_id = tracking.experiment_id(client, cfg.tracking.experiment, uri)
    tags = {
        "tl.model": str(cfg.model.name), "tl.strategy": str(cfg.strategy.name),
        "tl.dataset": str(cfg.dataset.name), "tl.overrides": " ".join(overrides),
        "tl.command": reproduce_command(overrides), "tl.git_commit": tracking.git_commit(),
        "tl.cwd": str(paths.launch_dir()), **resume.process_tags(),
        **{f"tl.version.{k}": v for k, v in tracking.package_versions().items()},
        **(extra_tags or {}),
    }
    if parent is not None:
        tags["mlflow.parentRunId"] = parent.run_id
    tags = {k: tracking.text(v) for k, v in tags.items()}
    run_id = client.create_run(exp_id, run_name=run_name(cfg), tags=tags).info.run_id
    return _run(cfg, client, run_id, out_dir, exp_id if parent is None else None)


def _run(cfg: DictConfig, client, run_id: str, out_dir: Path | None, exp_id: str | None) -> float:
    """Fit, and end the run FINISHED, FAILED or (on a signal) KILLED."""
    try:
        if not cfg.get("resume"):
            # The config first, so even a run that fails at once says what it was.
            tracking.log_params(client, run_id, tracking.flatten(cfg))
        with signals.stop_on_signals():
            best = fit(cfg, client, run_id, out_dir)
    except KeyboardInterrupt as e:
        how = f"stopped by {signals.signal_name(e)}; resume with: tl-train +resume={run_id}"
        client.set_tag(run_id, "tl.error_type", signals.signal_name(e))
        client.set_tag(run_id, "tl.error", how)
        client.set_terminated(run_id, "KILLED")
        log.warning("run %s %s", run_id, how)
        if parallel.in_loky_worker():  # a failed job, not the end of the sweep's other jobs
            raise signals.JobKilled(f"run {run_id} {how}") from None
        raise
    except BaseException as e:
        client.set_tag(run_id, "tl.error_type", type(e).__name__)
        client.set_tag(run_id, "tl.error", f"{type(e).__name__}: {e}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    if exp_id is not None:
        print("Open the run in MLflow:\n" + tracking.ui_hint(tracking.resolve_uri(cfg.tracking),
                                                            exp_id, [run_id]))
    return best


def fit(cfg: DictConfig, client, run_id: str, out_dir: Path | None) -> float:
    validate.check(cfg)
    parallel.limit_threads()
    rt = runtime.resolve_runtime(cfg.trainer)
    generator = runtime.seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    t0 = time.perf_counter()
    backbone = backbones.create(cfg.model)
    phases.check(cfg, backbones.stage_count(backbone, cfg.model.get("stages")))
    schedule = phases.schedule(cfg)
    model = backbone.model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prep = Preprocess(rt, backbone.data.mean, backbone.data.std)
    job = _job(schedule[0].cfg, backbone, rt, prep, generator)
    setup_seconds = time.perf_counter() - t0

    optimizer, scheduler = param_groups.optimizer_and_schedule(model, backbone, schedule[0])

    def enter(phase: phases.Phase, before: Job):
        """A later phase: the weights trained so far, its own freezing, optimizer and schedule."""
        for hook in before.plan.hooks:
            hook.remove()
        phase_job = _job(phase.cfg, backbone, rt, prep, generator)
        log.info("phase %d (%s) from epoch %d: %s", phase.index, phase.name, phase.start, phases.describe([phase]))
        return (phase_job, *param_groups.optimizer_and_schedule(model, backbone, phase))
    facts = {
        **job.rt.as_params(), **job.plan.as_params(),
        "data.classes": ",".join(job.classes), "data.num_classes": len(job.classes),
        "data.train_images": job.n_train, "data.val_images": job.n_val,
        "data.input_size": backbone.data.input_size, "data.resize_size": backbone.data.resize_size,
        "data.mean": backbone.data.mean, "data.std": backbone.data.std,
        "model.num_stages": len(backbone.stages), "model.head": ",".join(backbone.head),
    }
    if cfg.get("resume"):  # logged when the run began; they must still hold
        resume.check_unchanged(client, run_id, facts)
    else:
        tracking.log_params(client, run_id, {
            **facts, "runtime.feature_cache": job.feature_cache,
            "data.image_cache_mb": round(job.cached_bytes / 2**20, 1)})
        client.set_tag(run_id, "tl.precision", f"{rt.precision} ({rt.precision_reason})")
        tracking.log_metrics(client, run_id, {**job.report.metrics, "setup_seconds": setup_seconds}, step=0)

    work = Path(tempfile.mkdtemp(prefix="tl-run-"))
    try:
        if not cfg.get("resume"):
            (work / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            client.log_artifact(run_id, str(work / "config.yaml"))
            if out_dir is not None and (out_dir / ".hydra").is_dir():
                client.log_artifacts(run_id, str(out_dir / ".hydra"), "hydra")
            for name, content in job.report.files.items():
                (work / name).write_text(content, encoding="utf-8")
                client.log_artifact(run_id, str(work / name))
        ckpts = checkpointing.RunCheckpoints(client, run_id, staging=work)
        best, job = _epochs(cfg, client, run_id, model, job, optimizer, scheduler, generator, ckpts,
                            schedule, enter)
        diagnostics.log_best(client, run_id, model, ckpts.dir / checkpointing.BEST, job)
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
    report: datacheck.Report
    n_train: int
    n_val: int
    cached_bytes: int = 0
    feature_cache: str = "off"
    shown: dict = field(default_factory=dict)  # val index -> uint8 image, when batches are features


def _job(cfg, backbone, rt, prep, generator) -> Job:
    job = (_feature_job if features.applicable(cfg) else _image_job)(cfg, backbone, rt, prep, generator)
    if cfg.trainer.get("compile"):
        # Compiling pays off only for long runs: minutes of compile time on a CPU.
        job = replace(job, step_model=torch.compile(job.step_model))
    return job


def _image_job(cfg, backbone, rt, prep, generator) -> Job:
    t = cfg.trainer
    splits = data.build_splits(cfg.dataset, backbone.data, t.image_cache_mb, t.image_cache_scale)
    if not backbone.head:  # a later phase keeps the head trained so far
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
            d.input_size, t.batch_size, rt.device, int(t.seed),
            scale=cfg.dataset.get("crop_scale") or (0.08, 1.0), hflip=bool(cfg.dataset.get("hflip", True)))
    cached = sum(getattr(ds, "cached_bytes", 0) for ds in (splits.train, splits.val))
    return Job(backbone.model, train_loader, val_loader, prep, rt, plan, splits.classes,
               datacheck.check(splits), len(splits.train), len(splits.val), cached)


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
        if not backbone.head:
            backbones.attach_head(backbone, len(splits.classes), cfg.model.get("stages"))
        backbone.model.to(rt.device)
        feats = features.extract(backbone, splits, datacheck.check(splits), int(fc.views), rt, prep, int(t.seed),
                                 t.get("eval_batch_size") or t.batch_size,
                                 train_view_transform=splits.train.transform,
                                 val_view_transform=data.val_transform(backbone.data))
        features.save(path, feats)
    else:
        if not backbone.head:
            backbones.attach_head(backbone, len(feats.classes), cfg.model.get("stages"))
        backbone.model.to(rt.device)
    log.info("feature cache %s: %s", state, path)
    plan = strategies.apply(backbone, cfg.strategy)
    head = backbone.model.get_submodule(backbone.head[-1])
    train_loader = features.FeatureBatches(feats.train, feats.train_targets, t.batch_size, int(t.seed))
    val_loader = features.FeatureBatches(feats.val, feats.val_targets, t.get("eval_batch_size") or t.batch_size)
    rt = replace(rt, num_workers=0, channels_last=False)
    return Job(head, train_loader, val_loader, Preprocess(rt), rt, plan, feats.classes,
               datacheck.Report(dict(feats.report_metrics), dict(feats.report_files)),
               feats.train_targets.numel(), feats.val_targets.numel(),
               feats.train.numel() * feats.train.element_size(), state, feats.shown)


def _epochs(cfg, client, run_id, model, job: Job, optimizer, scheduler, generator,
            ckpts: checkpointing.RunCheckpoints, schedule: list[phases.Phase], enter) -> tuple[float, Job]:
    t = cfg.trainer
    criterion = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda") if job.rt.precision == "fp16" else None
    phase, done = schedule[0], checkpointing.Progress()
    if cfg.get("resume"):
        # The saved optimizer belongs to the phase of the saved epoch: rebuild that one first.
        saved_in = phases.at(schedule, ckpts.saved_epoch())
        if saved_in is not phase:
            phase = saved_in
            job, optimizer, scheduler = enter(phase, job)
        done = ckpts.restore(model, optimizer, scheduler, scaler, generator)
    best, best_epoch, total = done.best, done.best_epoch, done.seconds
    for epoch in progress.epochs(t.epochs, start=done.epoch + 1):
        if epoch > phase.end:
            phase = phases.at(schedule, epoch)
            job, optimizer, scheduler = enter(phase, job)
        _set_epoch(job.train_loader, epoch)
        group_lrs = param_groups.lrs(optimizer)
        lr = optimizer.param_groups[-1]["lr"]  # the phase's own LR: the head's (the only one without groups)
        tr = train_one_epoch(job.step_model, progress.batches(job.train_loader, "train"), optimizer,
                             criterion, job.rt, job.plan, job.prep, scaler)
        va = evaluate(job.step_model, progress.batches(job.val_loader, "val"), criterion, job.rt, job.prep)
        scheduler.step(epoch - phase.start + 1)  # each phase's schedule counts its own epochs
        seconds = tr.seconds + va.seconds
        total += seconds
        # A first signal waits for this block: the epoch's metrics and checkpoint land together.
        with signals.deferred():
            if va.acc > best:
                best, best_epoch = va.acc, epoch
                if cfg.tracking.get("log_checkpoint", True):
                    ckpts.save_best(model, epoch, va.acc, job.classes)
            tracking.log_metrics(client, run_id, {
                "train_loss": tr.loss, "train_acc": tr.acc, "val_loss": va.loss, "val_acc": va.acc,
                "lr": lr, "phase": phase.index, **{f"lr.{k}": v for k, v in group_lrs.items()},
                "epoch_seconds": seconds,
                "images_per_second": (tr.images + va.images) / max(seconds, 1e-9),
                "train_images_per_second": tr.images / max(tr.seconds, 1e-9),
            }, step=epoch)
            ckpts.save_last(checkpointing.Progress(epoch, best, best_epoch, total, phase.index), model, optimizer,
                            scheduler, scaler, generator, job.classes)
        log.info("epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.2e  %.1fs",
                 epoch, t.epochs, tr.loss, tr.acc, va.loss, va.acc, lr, seconds)
    tracking.log_metrics(client, run_id, {"best_val_acc": best, "best_epoch": best_epoch,
                                          "train_seconds": total}, step=t.epochs)
    ckpts.finish()
    log.info("%s: best val acc %.4f at epoch %d", run_name(cfg), best, best_epoch)
    return best, job


def _set_epoch(loader, epoch: int) -> None:
    """Epoch e's order and augmentation depend on (seed, e) alone, so a resumed run repeats an
    uninterrupted one exactly, whichever kind of batches it trains on."""
    target = getattr(loader, "sampler", loader)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)


# An absolute path: the `tl-train` script's caller is no file next to conf/.
@hydra.main(version_base="1.3", config_path=str(paths.project_root() / "conf"), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    return train(cfg)


def main() -> None:
    """Exit status: 0 when every run finished; 1 when a run (or a sweep's job) failed or was
    killed in a parallel sweep; 128 + the signal's number when a signal stopped this process."""
    code = 0
    try:
        _hydra_main()
    except KeyboardInterrupt as e:  # the run is KILLED in the store, and said how to resume
        code = signals.exit_code(e)
    finally:
        if not sweep.finish_all() and code == 0:
            code = 1
    if code:
        sys.exit(code)


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: joblib's workers unpickle the task
    # function by module name, and functions of __main__ are pickled by value (and fail).
    from tl.train import main as _main

    _main()
