"""Optimizer and LR schedule from config, through timm's factories."""

from __future__ import annotations

from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

from tl.errors import not_one_of

# timm's "sgd" is Nesterov; the tutorial's SGD(momentum=0.9) is timm's "momentum".
OPTIMIZERS = {"sgd": "momentum", "nesterov": "sgd", "adamw": "adamw"}
SCHEDULERS = ("step", "cosine")


def build_optimizer(model: nn.Module, cfg, groups: list[dict] | None = None):
    """`groups`: named param groups with their own LRs (tl.param_groups); None: one group."""
    if cfg.name not in OPTIMIZERS:
        raise not_one_of("optimizer.name", cfg.name, OPTIMIZERS)
    # Groups are built from trainable parameters only, after freezing: a frozen parameter in a
    # group would skew timm's per-group settings (pytorch-image-models#2691).
    params = groups if groups is not None else [p for p in model.parameters() if p.requires_grad]
    kwargs = {"momentum": cfg.momentum} if cfg.name in ("sgd", "nesterov") else {}
    return create_optimizer_v2(params, opt=OPTIMIZERS[cfg.name], lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


def build_scheduler(optimizer, cfg, epochs: int):
    """A per-epoch schedule: call `.step(epoch + 1)` after each epoch."""
    if cfg.name not in SCHEDULERS:
        raise not_one_of("scheduler.name", cfg.name, SCHEDULERS)
    if cfg.name == "step":
        scheduler, _ = create_scheduler_v2(
            optimizer, sched="step", num_epochs=epochs, decay_epochs=cfg.decay_epochs,
            decay_rate=cfg.decay_rate, warmup_epochs=cfg.warmup_epochs,
        )
    else:
        scheduler, _ = create_scheduler_v2(
            optimizer, sched="cosine", num_epochs=epochs, min_lr=cfg.min_lr,
            warmup_epochs=cfg.warmup_epochs,
        )
    return scheduler
