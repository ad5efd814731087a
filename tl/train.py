"""`python -m tl.train` / `tl-train`: one run, or a sweep with `-m`.

`train(cfg)` is the plain core (tests call it directly); `main()` is the thin Hydra entry.
"""

from __future__ import annotations

import json
import logging
import math
import os
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

from tl import (backbones, checkpointing, cost, data, datacheck, decoded, device_batches, diagnostics,
                features, identity, layout, parallel, paths, progress, resume, runtime, signals, strategies,
                sweep, tracking, validate)
from tl.engine import Preprocess, evaluate, train_one_epoch
from tl.errors import ConfigError, TLError
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

    With `resume=RUN_ID` it continues that run instead (see `tl.resume`). `extra_tags` are set
    on the run on top of (and over) its own, e.g. by `tl reproduce`."""
    overrides, out_dir = _hydra_job()
    started = time.perf_counter()  # a sweep's job starts here; a single run with its process
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
    return _run(cfg, client, run_id, out_dir, exp_id if parent is None else None,
                started if parent is not None else None)


def _run(cfg: DictConfig, client, run_id: str, out_dir: Path | None, exp_id: str | None,
         started: float | None = None) -> float:
    """Fit, and end the run FINISHED, FAILED or (on a signal) KILLED."""
    try:
        if not cfg.get("resume"):
            # The config first, so even a run that fails at once says what it was.
            tracking.log_params(client, run_id, tracking.flatten(cfg))
        with signals.stop_on_signals():
            best = fit(cfg, client, run_id, out_dir, started)
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


def fit(cfg: DictConfig, client, run_id: str, out_dir: Path | None, started: float | None = None) -> float:
    """`started`: when the job began on the `time.perf_counter` clock (default: its process's
    start), the origin of `total_seconds`."""
    started = cost.process_start() if started is None else started
    validate.check(cfg)
    parallel.limit_threads()
    rt = runtime.resolve_runtime(cfg.trainer)
    generator = runtime.seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    t0 = time.perf_counter()
    backbone = backbones.create(cfg.model)
    strategies.frozen_stage_count(cfg.strategy, backbones.stage_count(backbone, cfg.model.get("stages")))
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
    facts = {
        **job.rt.as_params(), **job.plan.as_params(),
        "data.classes": ",".join(job.classes), "data.num_classes": len(job.classes),
        "data.train_images": job.n_train, "data.val_images": job.n_val, "data.test_images": job.n_test,
        "data.input_size": backbone.data.input_size, "data.resize_size": backbone.data.resize_size,
        "data.mean": backbone.data.mean, "data.std": backbone.data.std,
        "model.num_stages": len(backbone.stages), "model.head": ",".join(backbone.head),
    }
    if job.layout:
        facts["data.layout"] = layout.line(job.layout)
    if cfg.get("resume"):  # logged when the run began; they must still hold
        resume.check_unchanged(client, run_id, facts)
    else:
        for k, v in identity.tags(cfg, backbone.model).items():
            client.set_tag(run_id, k, v)
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
            files = dict(job.report.files)
            if job.layout:
                files["layout.json"] = json.dumps(job.layout, indent=1, ensure_ascii=False)
            for name, content in files.items():
                (work / name).write_text(content, encoding="utf-8")
                client.log_artifact(run_id, str(work / name))
        ckpts = checkpointing.RunCheckpoints(client, run_id, staging=work)
        best = _epochs(cfg, client, run_id, model, job, optimizer, scheduler, generator, ckpts)
        diagnostics.log_best(client, run_id, model, ckpts.dir / checkpointing.BEST, job)
        if job.test_loader is not None:  # once, on the val-selected model, after every choice
            t = diagnostics.log_test(client, run_id, job, cfg.trainer.epochs)
            log.info("%s: test acc %.4f  loss %.4f (%d images)", run_name(cfg), t["test_acc"],
                     t["test_loss"], job.n_test)
        tracking.log_metrics(client, run_id, {"total_seconds": time.perf_counter() - started},
                             step=cfg.trainer.epochs)
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
    test_loader: object = None  # evaluated once, at the end; None without a test split
    n_test: int = 0
    shown_test: dict = field(default_factory=dict)
    layout: dict | None = None  # `tl.layout.summary` of the splits


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
            d.input_size, t.batch_size, rt.device, int(t.seed),
            scale=cfg.dataset.get("crop_scale") or (0.08, 1.0), hflip=bool(cfg.dataset.get("hflip", True)))
    cached = sum(getattr(ds, "cached_bytes", 0) for ds in (splits.train, splits.val, splits.test) if ds is not None)
    test_loader = None
    if splits.test is not None:
        if data.in_memory(splits.test):
            images, targets = device_batches.pretransform(splits.test)
            test_loader = device_batches.TensorBatches(images.to(rt.device), targets.to(rt.device), eval_bs)
        else:
            test_loader = data.eval_loader(splits.test, eval_bs, rt.num_workers, rt.device.type == "cuda")
    return Job(backbone.model, train_loader, val_loader, prep, rt, plan, splits.classes,
               datacheck.check(splits), len(splits.train), len(splits.val), cached,
               test_loader=test_loader, n_test=0 if splits.test is None else len(splits.test), layout=splits.layout)


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
        feats = features.extract(backbone, splits, datacheck.check(splits), int(fc.views), rt, prep, int(t.seed),
                                 t.get("eval_batch_size") or t.batch_size,
                                 train_view_transform=splits.train.transform,
                                 val_view_transform=data.val_transform(backbone.data))
        features.save(path, feats)
    else:
        backbones.attach_head(backbone, len(feats.classes), cfg.model.get("stages"))
        backbone.model.to(rt.device)
        if feats.layout:
            log.info("%s", layout.line(feats.layout))
    log.info("feature cache %s: %s", state, path)
    plan = strategies.apply(backbone, cfg.strategy)
    head = backbone.model.get_submodule(backbone.head[-1])
    train_loader = features.FeatureBatches(feats.train, feats.train_targets, t.batch_size, int(t.seed))
    val_loader = features.FeatureBatches(feats.val, feats.val_targets, t.get("eval_batch_size") or t.batch_size)
    test_loader = None
    if feats.test is not None:
        test_loader = features.FeatureBatches(feats.test, feats.test_targets, t.get("eval_batch_size") or t.batch_size)
    rt = replace(rt, num_workers=0, channels_last=False)
    return Job(head, train_loader, val_loader, Preprocess(rt), rt, plan, feats.classes,
               datacheck.Report(dict(feats.report_metrics), dict(feats.report_files)),
               feats.train_targets.numel(), feats.val_targets.numel(),
               feats.train.numel() * feats.train.element_size(), state, feats.shown,
               test_loader=test_loader, n_test=0 if feats.test is None else feats.test_targets.numel(),
               shown_test=feats.shown_test, layout=feats.layout)


def _epochs(cfg, client, run_id, model, job: Job, optimizer, scheduler, generator,
            ckpts: checkpointing.RunCheckpoints) -> float:
    t = cfg.trainer
    criterion = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda") if job.rt.precision == "fp16" else None
    done = (ckpts.restore(model, optimizer, scheduler, scaler, generator) if cfg.get("resume")
            else checkpointing.Progress())
    best, best_epoch, total = done.best, done.best_epoch, done.seconds
    rate, train_rate = cost.rate_names(job.feature_cache != "off")
    for epoch in progress.epochs(t.epochs, start=done.epoch + 1):
        _set_epoch(job.train_loader, epoch)
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(job.step_model, progress.batches(job.train_loader, "train"), optimizer,
                             criterion, job.rt, job.plan, job.prep, scaler)
        va = evaluate(job.step_model, progress.batches(job.val_loader, "val"), criterion, job.rt, job.prep)
        scheduler.step(epoch)
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
                "lr": lr, "epoch_seconds": seconds,
                rate: (tr.images + va.images) / max(seconds, 1e-9),
                train_rate: tr.images / max(tr.seconds, 1e-9),
            }, step=epoch)
            ckpts.save_last(checkpointing.Progress(epoch, best, best_epoch, total), model, optimizer,
                            scheduler, scaler, generator, job.classes)
        log.info("epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.2e  %.1fs",
                 epoch, t.epochs, tr.loss, tr.acc, va.loss, va.acc, lr, seconds)
    tracking.log_metrics(client, run_id, {"best_val_acc": best, "best_epoch": best_epoch,
                                          "train_seconds": total}, step=t.epochs)
    ckpts.finish()
    log.info("%s: best val acc %.4f at epoch %d", run_name(cfg), best, best_epoch)
    return best


def _set_epoch(loader, epoch: int) -> None:
    """Epoch e's order and augmentation depend on (seed, e) alone, so a resumed run repeats an
    uninterrupted one exactly, whichever kind of batches it trains on."""
    target = getattr(loader, "sampler", loader)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)


# An absolute path: the `tl-train` script's caller is no file next to conf/.
@hydra.main(version_base="1.3", config_path=str(paths.project_root() / "conf"), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    try:
        return train(cfg)
    except TLError as e:
        # A config or data error is a message, not a crash: no traceback, exit status 2 (a
        # sweep's job still fails through Hydra; HYDRA_FULL_ERROR=1 keeps the trace).
        if _single_run() and os.environ.get("HYDRA_FULL_ERROR") != "1":
            print(f"tl-train: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        raise


def _single_run() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN


def main() -> None:
    """Exit status: 0 when every run finished; 1 when a run (or a sweep's job) failed or was
    killed in a parallel sweep; 2 when a single run's config or data is wrong (the message,
    no traceback); 128 + the signal's number when a signal stopped this process."""
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
