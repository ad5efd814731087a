"""`python -m tl.train` / `tl-train`: one run, or a sweep with `-m`.

`train(cfg)` is the plain core (tests call it directly); `main()` is the thin Hydra entry.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from tl import (backbones, checkpointing, data, datacheck, parallel, paths, resume, runtime,
                signals, strategies, sweep, tracking, validate)
from tl.engine import evaluate, train_one_epoch
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


def train(cfg: DictConfig) -> float:
    """Train one model as `cfg` says, logging everything to MLflow. Returns best val accuracy.

    With `resume=RUN_ID` it continues that run instead (see `tl.resume`)."""
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
    backbone = backbones.create(cfg.model)
    strategies.frozen_stage_count(cfg.strategy, backbones.stage_count(backbone, cfg.model.get("stages")))
    splits = data.build_splits(cfg.dataset, backbone.data)
    report = datacheck.check(splits)
    backbones.attach_head(backbone, len(splits.classes), cfg.model.get("stages"))
    plan = strategies.apply(backbone, cfg.strategy)
    model = backbone.model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.trainer.epochs)
    criterion = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda") if rt.precision == "fp16" else None

    facts = {
        **rt.as_params(), **plan.as_params(),
        "data.classes": ",".join(splits.classes), "data.num_classes": len(splits.classes),
        "data.train_images": len(splits.train), "data.val_images": len(splits.val),
        "data.input_size": backbone.data.input_size, "data.resize_size": backbone.data.resize_size,
        "data.mean": backbone.data.mean, "data.std": backbone.data.std,
        "model.num_stages": len(backbone.stages), "model.head": ",".join(backbone.head),
    }
    if cfg.get("resume"):  # logged when the run began; they must still hold
        resume.check_unchanged(client, run_id, facts)
    else:
        tracking.log_params(client, run_id, facts)
        client.set_tag(run_id, "tl.precision", f"{rt.precision} ({rt.precision_reason})")
        tracking.log_metrics(client, run_id, report.metrics, step=0)

    work = Path(tempfile.mkdtemp(prefix="tl-run-"))
    try:
        if not cfg.get("resume"):
            (work / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            client.log_artifact(run_id, str(work / "config.yaml"))
            if out_dir is not None and (out_dir / ".hydra").is_dir():
                client.log_artifacts(run_id, str(out_dir / ".hydra"), "hydra")
            for name, content in report.files.items():
                (work / name).write_text(content, encoding="utf-8")
                client.log_artifact(run_id, str(work / name))
        return _epochs(cfg, client, run_id, model, splits, plan, optimizer, scheduler, criterion,
                       scaler, rt, generator, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _epochs(cfg, client, run_id, model, splits, plan, optimizer, scheduler, criterion, scaler,
            rt, generator, work: Path) -> float:
    t = cfg.trainer
    train_loader, val_loader = data.loaders(
        splits, t.batch_size, t.get("eval_batch_size") or t.batch_size, rt.num_workers, generator,
        pin_memory=rt.device.type == "cuda")
    ckpts = checkpointing.RunCheckpoints(client, run_id, staging=work)
    done = (ckpts.restore(model, optimizer, scheduler, scaler, generator) if cfg.get("resume")
            else checkpointing.Progress())
    best, best_epoch, total = done.best, done.best_epoch, done.seconds
    for epoch in range(done.epoch + 1, t.epochs + 1):
        train_loader.sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(model, train_loader, optimizer, criterion, rt, plan, scaler)
        va = evaluate(model, val_loader, criterion, rt)
        scheduler.step(epoch)
        seconds = tr.seconds + va.seconds
        total += seconds
        # A first signal waits for this block: the epoch's metrics and checkpoint land together.
        with signals.deferred():
            if va.acc > best:
                best, best_epoch = va.acc, epoch
                if cfg.tracking.get("log_checkpoint", True):
                    ckpts.save_best(model, epoch, va.acc, splits.classes)
            tracking.log_metrics(client, run_id, {
                "train_loss": tr.loss, "train_acc": tr.acc, "val_loss": va.loss, "val_acc": va.acc,
                "lr": lr, "epoch_seconds": seconds,
                "images_per_second": (tr.images + va.images) / max(seconds, 1e-9),
                "train_images_per_second": tr.images / max(tr.seconds, 1e-9),
            }, step=epoch)
            ckpts.save_last(checkpointing.Progress(epoch, best, best_epoch, total), model, optimizer,
                            scheduler, scaler, generator, splits.classes)
        log.info("epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.2e  %.1fs",
                 epoch, t.epochs, tr.loss, tr.acc, va.loss, va.acc, lr, seconds)
    tracking.log_metrics(client, run_id, {"best_val_acc": best, "best_epoch": best_epoch,
                                          "train_seconds": total}, step=t.epochs)
    ckpts.finish()
    log.info("%s: best val acc %.4f at epoch %d", run_name(cfg), best, best_epoch)
    return best


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
