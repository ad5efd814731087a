"""The epoch loop: train, evaluate, step the schedule, keep the best, log, checkpoint.

A new run starts it from `Progress()`; a resumed run from its checkpoint's progress, with the
model, optimizer, schedule and RNG states already restored: the loop cannot tell them apart."""

from __future__ import annotations

import logging
import math
import time

import torch
from omegaconf import DictConfig

from tl.errors import TLError
from tl.runtime import cost, progress, signals
from tl.tracking import store
from tl.training import checkpoints, jobs, param_groups, pending, phases, rungs
from tl.training.engine import evaluate, train_one_epoch
from tl.training.jobs import Setup

log = logging.getLogger("tl")


class Diverged(TLError):
    """The loss became NaN or infinite: the run's numbers from here on would mean nothing."""


def check_finite(epoch: int, train_loss: float, val_loss: float, lr: float, precision: str) -> None:
    """Fail the run at the epoch whose loss is not a number, before that epoch is logged or
    checkpointed: argmax over NaN logits would otherwise pass for a finished run at chance."""
    if math.isfinite(train_loss) and math.isfinite(val_loss):
        return
    kept = f"epochs 1-{epoch - 1} stay logged" if epoch > 1 else "no epoch was logged"
    fp32 = "" if precision == "fp32" else f", or set trainer.precision=fp32 (this run: {precision})"
    raise Diverged(f"the loss diverged at epoch {epoch} (train loss {train_loss}, val loss {val_loss}): "
                   f"lower optimizer.lr (this phase: {lr:g}){fp32}; {kept}")


def grad_scaler(precision: str) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling; bf16 and fp32 do not."""
    return torch.amp.GradScaler("cuda") if precision == "fp16" else None


def run_epochs(cfg: DictConfig, client, run_id: str, s: Setup, scaler, ckpts: checkpoints.RunCheckpoints,
               done: checkpoints.Progress, started: float | None = None) -> tuple[checkpoints.Progress, Setup]:
    """Epochs `done.epoch + 1 .. trainer.epochs` (or `.. trainer.stop_after`, a race's rung),
    entering each later phase at its first epoch; returns where training ends and the setup of
    the last phase. `started`: when this process's share of the run began (`time.perf_counter`),
    for the run's total seconds in `last.pt`."""
    started = time.perf_counter() if started is None else started
    t = cfg.trainer
    last_epoch = rungs.last_epoch(t)
    criterion = torch.nn.CrossEntropyLoss()
    best, best_epoch, total = done.best, done.best_epoch, done.seconds
    keep_best = cfg.tracking.get("log_checkpoint", True)
    records = pending.Pending(client, run_id, ckpts, float(cfg.tracking.get("flush_seconds", 0.0)),
                              rows=list(done.rows))
    try:
        for epoch in progress.epochs(last_epoch, start=done.epoch + 1):
            if epoch > s.phase.end:
                records.flush()  # the last phase's epochs land before its optimizer goes
                s = jobs.enter(s, phases.at(s.schedule, epoch))
            job, phase = s.job, s.phase
            rt = job.loop_rt
            rate, train_rate = cost.rate_names(job.feature_cache != "off")
            job.train_loader.set_epoch(epoch)
            group_lrs = param_groups.lrs(s.optimizer)
            lr = s.optimizer.param_groups[-1]["lr"]  # the phase's own LR: the head's (the only one without groups)
            tr = train_one_epoch(job.step_model, progress.batches(job.train_loader, "train"), s.optimizer,
                                 criterion, rt, job.plan, job.prep, scaler)
            va = evaluate(job.step_model, progress.batches(job.val_loader, "val"), criterion, rt, job.prep)
            check_finite(epoch, tr.loss, va.loss, lr, rt.precision)
            s.scheduler.step(epoch - phase.start + 1)  # each phase's schedule counts its own epochs
            seconds = tr.seconds + va.seconds
            total += seconds
            # A first signal waits for this block: the epoch's metrics and checkpoint land together.
            with signals.deferred():
                improved = va.acc > best
                if improved:
                    best, best_epoch = va.acc, epoch
                here = checkpoints.Progress(epoch, best, best_epoch, total, phase.index,
                                            done.elapsed + time.perf_counter() - started)
                model, optimizer, scheduler, generator, classes = (s.model, s.optimizer, s.scheduler,
                                                                   s.generator, job.classes)
                records.add(epoch, {
                    "train_loss": tr.loss, "train_acc": tr.acc, "val_loss": va.loss, "val_acc": va.acc,
                    "lr": lr, "phase": phase.index, **{f"lr.{k}": v for k, v in group_lrs.items()},
                    "epoch_seconds": seconds,
                    rate: (tr.images + va.images) / max(seconds, 1e-9),
                    train_rate: tr.images / max(tr.seconds, 1e-9),
                }, best=(lambda: ckpts.best(model, epoch, va.acc, classes)) if improved and keep_best else None,
                    last=lambda: ckpts.last(here, model, optimizer, scheduler, scaler, generator, classes),
                    final=epoch == last_epoch)
            log.info("epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.2e  %.1fs",
                     epoch, t.epochs, tr.loss, tr.acc, va.loss, va.acc, lr, seconds)
    finally:  # stopped early: the finished epochs that wait still land, the one in progress not
        records.flush()
    store.log_metrics(client, run_id, {"best_val_acc": best, "best_epoch": best_epoch,
                                       "train_seconds": total}, step=last_epoch)
    return checkpoints.Progress(last_epoch, best, best_epoch, total, s.phase.index), s
