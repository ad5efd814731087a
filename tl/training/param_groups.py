"""Parameter groups per backbone stage: discriminative learning rates (`lr_mult` of a phase)
and layer-wise LR decay (`optimizer.layer_decay`), for any strategy.

Groups are built after freezing, from trainable parameters only: one group per stage that has
a trainable parameter, in forward order, then the head. With m such groups the head trains at
the phase's LR and group j (0 = the first trainable stage) at

    LR x layer_decay ** (m - 1 - j)                        (BEiT / timm layer decay)
    LR x lr_mult ** ((m - 1 - j) / (m - 1))                 (lr_mult a number: fastai's slice(LR x lr_mult, LR))
    LR x lr_mult[stage index]                               (lr_mult a list: one per stage, then the head)

both factors when both are set. Counting only trainable groups is what keeps the scales right
under freezing: timm's own layer-decay grouping counts frozen layers too and mis-scales the
rest (pytorch-image-models#2691). Each group is named (`stage<i>`, `head`) and its LR is
logged per epoch as `lr.<name>`; without per-stage scaling there is one group, `head` when
only the head trains, else `all`.
"""

from __future__ import annotations

from omegaconf import ListConfig, OmegaConf

from tl.errors import ConfigError
from tl.models.stages import matches
from tl.training.optim import build_optimizer, build_scheduler


def _scales(m: int, decay, mult, stage_ids: list[int], n_blocks: int, mult_key: str) -> list[float]:
    scales = [1.0] * m
    if decay is not None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
            raise ConfigError(f"optimizer.layer_decay={decay!r} must be a number in (0, 1] (or null)")
        scales = [s * float(decay) ** (m - 1 - j) for j, s in enumerate(scales)]
    values = mult if isinstance(mult, (list, tuple)) else [] if mult is None else [mult]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"{mult_key}={mult!r}: each multiplier must be a number > 0")
    if isinstance(mult, (list, tuple)):
        if len(mult) != n_blocks:
            raise ConfigError(f"{mult_key} has {len(mult)} values but this model has {n_blocks - 1} stages "
                              f"and a head: give {n_blocks} values, or one number")
        scales = [s * float(mult[i]) for s, i in zip(scales, stage_ids)]
    elif mult is not None and m > 1:
        scales = [s * float(mult) ** ((m - 1 - j) / (m - 1)) for j, s in enumerate(scales)]
    return scales


def groups(model, backbone, cfg) -> list[dict] | None:
    """Named param groups with their LRs for `cfg` (a run's or a phase's config), or None when
    every trainable parameter trains at `optimizer.lr` (one plain group, as without stages)."""
    decay = cfg.optimizer.get("layer_decay")
    mult = cfg.strategy.get("lr_mult")
    if isinstance(mult, ListConfig):
        mult = OmegaConf.to_container(mult)
    if decay is None and (mult is None or mult == 1):
        return None
    named = dict(model.named_parameters())
    head = [n for n in named if any(matches(n, h) for h in backbone.head)]
    blocks = [(f"stage{i}", names) for i, names in enumerate(backbone.stages)] + [("head", head)]
    live = [(i, label, [named[n] for n in names if n in named and named[n].requires_grad])
            for i, (label, names) in enumerate(blocks)]
    live = [(i, label, params) for i, label, params in live if params]
    grouped = sum(p.numel() for _, _, params in live for p in params)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if grouped != trainable:  # a parameter in no stage would silently train at no LR at all
        raise ConfigError(f"the model's stages and head cover {grouped} of its {trainable} trainable "
                          "parameters: set model.stages to cover the whole backbone")
    scales = _scales(len(live), decay, mult, [i for i, _, _ in live], len(blocks),
                     cfg.strategy.get("lr_mult_key", "strategy.lr_mult"))
    lr = float(cfg.optimizer.lr)
    return [{"params": params, "lr": lr * s, "name": label}
            for (_, label, params), s in zip(live, scales)]


def optimizer_and_schedule(model, backbone, phase):
    """A fresh optimizer and LR schedule for `phase` (a `tl.training.phases.Phase`), over its epochs."""
    optimizer = build_optimizer(model, phase.cfg.optimizer, groups(model, backbone, phase.cfg))
    if len(optimizer.param_groups) == 1 and "name" not in optimizer.param_groups[0]:
        head = {id(p) for h in backbone.head for p in model.get_submodule(h).parameters()}
        only_head = all(id(p) in head for p in optimizer.param_groups[0]["params"])
        optimizer.param_groups[0]["name"] = "head" if only_head else "all"
    return optimizer, build_scheduler(optimizer, phase.cfg.scheduler, phase.epochs)


def lrs(optimizer) -> dict[str, float]:
    """Each param group's current LR by name."""
    return {g.get("name") or ("all" if len(optimizer.param_groups) == 1 else f"group{i}"): g["lr"]
            for i, g in enumerate(optimizer.param_groups)}
