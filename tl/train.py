"""`python -m tl.train` / `tl-train`: one run, or a sweep with `-m`.

`train(cfg)` is the plain core (tests call it directly); `main()` is the thin Hydra entry.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import tempfile
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from tl import backbones, data, diagnostics, progress, runtime, strategies, sweep, tracking, validate
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
    backbone = backbones.create(cfg.model)
    splits = data.build_splits(cfg.dataset, backbone.data)
    backbones.attach_head(backbone, len(splits.classes), cfg.model.get("stages"))
    plan = strategies.apply(backbone, cfg.strategy)
    model = backbone.model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.trainer.epochs)
    criterion = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda") if rt.precision == "fp16" else None

    tracking.log_params(client, run_id, {
        **rt.as_params(), **plan.as_params(),
        "data.classes": ",".join(splits.classes), "data.num_classes": len(splits.classes),
        "data.train_images": len(splits.train), "data.val_images": len(splits.val),
        "data.input_size": backbone.data.input_size, "data.resize_size": backbone.data.resize_size,
        "data.mean": backbone.data.mean, "data.std": backbone.data.std,
        "model.num_stages": len(backbone.stages), "model.head": ",".join(backbone.head),
    })
    client.set_tag(run_id, "tl.precision", f"{rt.precision} ({rt.precision_reason})")
    tracking.log_metrics(client, run_id, {"skipped_files": len(splits.skipped)}, step=0)

    work = Path(tempfile.mkdtemp(prefix="tl-run-"))
    try:
        (work / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        client.log_artifact(run_id, str(work / "config.yaml"))
        if out_dir is not None and (out_dir / ".hydra").is_dir():
            client.log_artifacts(run_id, str(out_dir / ".hydra"), "hydra")
        if splits.skipped:
            (work / "skipped_files.txt").write_text(
                "".join(f"{p}\t{why}\n" for p, why in splits.skipped))
            client.log_artifact(run_id, str(work / "skipped_files.txt"))
        best = _epochs(cfg, client, run_id, model, splits, plan, optimizer, scheduler, criterion,
                       scaler, rt, generator, work)
        diagnostics.log_best(client, run_id, model, work / "best.pt", splits, backbone.data, rt,
                             cfg.trainer.get("eval_batch_size") or cfg.trainer.batch_size)
        return best
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _epochs(cfg, client, run_id, model, splits, plan, optimizer, scheduler, criterion, scaler,
            rt, generator, work: Path) -> float:
    t = cfg.trainer
    train_loader, val_loader = data.loaders(
        splits, t.batch_size, t.get("eval_batch_size") or t.batch_size, rt.num_workers, generator,
        pin_memory=rt.device.type == "cuda")
    best, best_epoch, total = -1.0, 0, 0.0
    ckpt = work / "best.pt"
    for epoch in progress.epochs(t.epochs):
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(model, progress.batches(train_loader, "train"), optimizer, criterion,
                             rt, plan, scaler)
        va = evaluate(model, progress.batches(val_loader, "val"), criterion, rt)
        scheduler.step(epoch)
        seconds = tr.seconds + va.seconds
        total += seconds
        if va.acc > best:
            best, best_epoch = va.acc, epoch
            torch.save({"model": model.state_dict(), "epoch": epoch, "val_acc": va.acc,
                        "classes": splits.classes}, ckpt)
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
