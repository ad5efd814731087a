"""Many linear heads on one set of cached features, trained at once.

A screen over learning rates x weight decays on a frozen backbone is K small linear heads fed
the same batches. Here they are one [K, D, C] weight: every step is one batched matmul and one
update of all K heads, each head with its own LR, weight decay and LR schedule (as DINOv2's
linear evaluation trains its grid of heads over one frozen pass), so K heads cost about what
one does. The update is the configured optimizer's math (`optimizer.name` sgd, nesterov or
adamw: torch's SGD and AdamW) and the schedule timm's, per head; each head's curve equals a
single head trained alone from the same start with the same seed (tests/training/test_head_grid.py).

A run with `+head_grid.lrs=[...]` (and optionally `+head_grid.wds=[...]`) is one `freeze`
run: it trains the grid instead of its one head, logs the grid as a table (`head_grid.csv`,
`head_grid.json`), each head's best val accuracy as `grid.<i>.best_val_acc` and its val loss
at that epoch as `grid.<i>.best_val_loss`, and reports the best head as its own result (its
curve as the run's metrics, its diagnostics).
"""

from __future__ import annotations

import csv
import itertools
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import ListConfig
from torch import nn

from tl.errors import ConfigError, not_one_of
from tl.tracking import store
from tl.training.features import FeatureBatches, Features, applicable
from tl.training.optim import OPTIMIZERS, build_optimizer, build_scheduler

CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


@dataclass
class HeadCurve:
    """One head of the grid: its settings, its per-epoch curves, its best epoch and weights."""

    lr: float
    weight_decay: float
    curves: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in CURVES})
    best_val_acc: float = 0.0
    best_epoch: int = 0
    weight: torch.Tensor | None = None  # [C, D], as nn.Linear holds it: the best epoch's
    bias: torch.Tensor | None = None    # [C]

    def as_row(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay, "best_val_acc": self.best_val_acc,
                "best_epoch": self.best_epoch, "final_val_acc": self.curves["val_acc"][-1]}


def _values(values, key: str) -> list[float]:
    values = values if isinstance(values, (list, tuple, ListConfig)) else [] if values is None else [values]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={list(values)!r} must be a list of numbers, e.g. {key}=[0.001,0.01]") from None


def settings(lrs, wds) -> list[tuple[float, float]]:
    """The grid's (lr, weight decay) pairs, learning rate major."""
    lrs, wds = _values(lrs, "head_grid.lrs"), _values(wds, "head_grid.wds")
    if not lrs or not wds:
        raise ConfigError("head_grid.lrs and head_grid.wds must each hold at least one value")
    for key, values, ok in (("head_grid.lrs", lrs, lambda v: v > 0), ("head_grid.wds", wds, lambda v: v >= 0)):
        if not all(ok(v) for v in values):
            raise ConfigError(f"{key}={values}: learning rates must be > 0 and weight decays >= 0")
    return list(itertools.product(lrs, wds))


def _schedules(pairs, optimizer_cfg, scheduler_cfg, epochs: int):
    """Each head's LR per epoch, from timm's scheduler over one param group per head."""
    dummies = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr, "weight_decay": wd} for lr, wd in pairs]
    opt = build_optimizer(nn.Module(), optimizer_cfg, dummies)
    sched = build_scheduler(opt, scheduler_cfg, epochs)
    out = []
    for epoch in range(1, epochs + 1):
        out.append(torch.tensor([g["lr"] for g in opt.param_groups], dtype=torch.float32))
        sched.step(epoch)
    return out


class _Update:
    """The configured optimizer's step, for K heads at once (per-head lr and wd: [K, 1, ...])."""

    def __init__(self, optimizer_cfg, params: list[torch.Tensor], wds: torch.Tensor):
        if optimizer_cfg.name not in OPTIMIZERS:
            raise not_one_of("optimizer.name", optimizer_cfg.name, OPTIMIZERS)
        self.kind, self.params, self.wds = optimizer_cfg.name, params, wds
        self.momentum = float(optimizer_cfg.get("momentum") or 0.0)
        self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, lrs: torch.Tensor) -> None:
        self.t += 1
        for p, (m, v) in zip(self.params, self.state):
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr, wd, g = lrs.view(shape), self.wds.view(shape), p.grad
            if self.kind == "adamw":  # torch.optim.AdamW, default betas and eps
                b1, b2, eps = 0.9, 0.999, 1e-8
                p.mul_(1 - lr * wd)
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / (1 - b2 ** self.t) ** 0.5).add_(eps)
                p.sub_(lr / (1 - b1 ** self.t) * m / denom)
            else:  # torch.optim.SGD: coupled L2, then (Nesterov) momentum
                g = g + wd * p
                if self.momentum:
                    m.mul_(self.momentum).add_(g)
                    g = g + self.momentum * m if self.kind == "nesterov" else m
                p.sub_(lr * g)
            p.grad = None


def _logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.matmul(x.unsqueeze(0), weight) + bias.unsqueeze(1)  # [K, B, C]


def _losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    k, b, c = logits.shape
    return F.cross_entropy(logits.reshape(k * b, c), y.repeat(k), reduction="none").view(k, b).mean(1)


@torch.inference_mode()
def _evaluate(weight, bias, loader: FeatureBatches) -> tuple[torch.Tensor, torch.Tensor]:
    k = weight.shape[0]
    loss_sum, correct, seen = torch.zeros(k, dtype=torch.float64), torch.zeros(k), 0
    for x, y in loader:  # batch by batch, as a single head's evaluation sums its loss
        logits = _logits(x, weight, bias)
        loss_sum += _losses(logits, y).double() * y.numel()
        correct += (logits.argmax(2) == y).sum(1)
        seen += y.numel()
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def _train_epoch(weight, bias, loader, update: _Update, lrs, dropout: float):
    k = weight.shape[0]
    loss_sum, correct, seen = torch.zeros(k, dtype=torch.float64), torch.zeros(k), 0
    for x, y in loader:
        x = F.dropout(x, dropout, training=True) if dropout > 0 else x
        logits = _logits(x, weight, bias)
        losses = _losses(logits, y)
        losses.sum().backward()  # heads share no weights: each gets its own loss's gradient
        update.step(lrs)
        loss_sum += losses.detach().double() * y.numel()
        correct += (logits.detach().argmax(2) == y).sum(1)
        seen += y.numel()
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def train_head_grid(feats: Features, lrs, wds, epochs: int, seed: int, optimizer_cfg, scheduler_cfg,
                    batch_size: int = 32, eval_batch_size: int | None = None, head_dropout: float = 0.0,
                    init: nn.Linear | None = None) -> list[HeadCurve]:
    """Train one linear head per (lr, wd) of `lrs` x `wds` on `feats` (`features.obtain`'s
    output) for `epochs`, all at once; returns each head's curves and best val epoch.

    Every head starts from `init` (default: a fresh `nn.Linear` made right after seeding with
    `seed`), sees the same batches (the freeze run's shuffle and views for `seed`) and the same
    dropout mask on its input, and steps with its own lr, weight decay and schedule. The global
    RNG is seeded with `seed` inside and restored on return."""
    pairs = settings(lrs, wds)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = init if init is not None else nn.Linear(feats.train.shape[-1], len(feats.classes))
        k = len(pairs)
        weight = head.weight.detach().t().float().unsqueeze(0).repeat(k, 1, 1).requires_grad_()
        bias = head.bias.detach().float().unsqueeze(0).repeat(k, 1).requires_grad_()
        update = _Update(optimizer_cfg, [weight, bias], torch.tensor([wd for _, wd in pairs]))
        schedules = _schedules(pairs, optimizer_cfg, scheduler_cfg, epochs)
        train = FeatureBatches(feats.train, feats.train_targets, batch_size, seed)
        val = FeatureBatches(feats.val, feats.val_targets, eval_batch_size or batch_size)
        heads = [HeadCurve(lr, wd) for lr, wd in pairs]
        for epoch in range(1, epochs + 1):
            train.set_epoch(epoch)
            tr_loss, tr_acc = _train_epoch(weight, bias, train, update, schedules[epoch - 1], head_dropout)
            va_loss, va_acc = _evaluate(weight.detach(), bias.detach(), val)
            for i, h in enumerate(heads):
                for key, value in zip(CURVES, (tr_loss[i], tr_acc[i], va_loss[i], va_acc[i],
                                               schedules[epoch - 1][i])):
                    h.curves[key].append(float(value))
                improved = float(va_acc[i]) > h.best_val_acc  # as the epoch loop keeps its best
                if improved:
                    h.best_val_acc, h.best_epoch = float(va_acc[i]), epoch
                if improved or h.weight is None:
                    h.weight, h.bias = weight[i].detach().t().clone(), bias[i].detach().clone()
    return heads


# ---------------------------------------------------------------- as one freeze run
def requested(cfg) -> bool:
    """Whether `cfg` asks for a grid (`+head_grid.lrs=[...]`); a ConfigError when it asks for one
    where there is no cached feature to train it on."""
    grid = cfg.get("head_grid")
    if not grid:
        return False
    if not applicable(cfg) or cfg.get("resume"):
        raise ConfigError("head_grid trains many heads on cached features: use it with strategy=freeze "
                          "(strategy.feature_cache.enabled=true, strategy.bn=eval), and on a new run")
    return True


def _features_of(job) -> Features:
    """The job's cached features, as `features.obtain` returned them."""
    tr, va = job.train_loader, job.val_loader
    return Features(list(job.classes), tr.feats, tr.targets, va.feats[0], va.targets, {}, {}, {})


def fit(cfg, client, run_id: str, s) -> tuple[float, int, float]:
    """Train `cfg`'s grid on the run's features (from the run's own initial head), log the grid
    as a table and the best head's curve as the run's metrics, and leave the best head's weights
    in the run's head. Returns (best val acc, its epoch, seconds)."""
    t, grid, head = cfg.trainer, cfg.head_grid, s.job.step_model
    wds = grid.get("wds") if grid.get("wds") is not None else [cfg.optimizer.weight_decay]
    start = time.perf_counter()
    heads = train_head_grid(_features_of(s.job), grid.get("lrs"), wds, int(t.epochs), int(t.seed),
                            cfg.optimizer, cfg.scheduler, int(t.batch_size), t.get("eval_batch_size"),
                            s.job.plan.head_dropout, init=head)
    seconds = time.perf_counter() - start
    best = max(heads, key=lambda h: h.best_val_acc)  # ties: the first in the grid's order
    with torch.no_grad():
        head.weight.copy_(best.weight)
        head.bias.copy_(best.bias)
    _log(client, run_id, heads, best, seconds, int(t.epochs))
    return best.best_val_acc, best.best_epoch, seconds


def _log(client, run_id, heads: list[HeadCurve], best: HeadCurve, seconds: float, epochs: int) -> None:
    store.log_params(client, run_id, {"head_grid.size": len(heads), "head_grid.best_lr": best.lr,
                                      "head_grid.best_weight_decay": best.weight_decay})
    steps = [(e + 1, store.now_ms(), {k: best.curves[k][e] for k in CURVES}) for e in range(epochs)]
    store.log_steps(client, run_id, steps)  # one batched write for the best head's curve
    per_head = {f"grid.{i}.best_val_acc": h.best_val_acc for i, h in enumerate(heads)}
    per_head |= {f"grid.{i}.best_val_loss": h.curves["val_loss"][h.best_epoch - 1]
                 for i, h in enumerate(heads) if h.best_epoch}
    store.log_metrics(client, run_id, {**per_head, "best_val_acc": best.best_val_acc,
                                       "best_epoch": best.best_epoch, "train_seconds": seconds}, step=epochs)
    with tempfile.TemporaryDirectory(prefix="tl-grid-") as tmp:
        rows = [{"head": i, **h.as_row()} for i, h in enumerate(heads)]
        with open(Path(tmp) / "head_grid.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        (Path(tmp) / "head_grid.json").write_text(json.dumps(
            [{**r, "curves": h.curves} for r, h in zip(rows, heads)], indent=1))
        client.log_artifacts(run_id, tmp)
