"""Transfer strategies: which parameters train, and what frozen BatchNorm does.

- finetune: everything trains.
- freeze: only the new head trains; the backbone is a fixed feature extractor.
- partial_freeze: the first `frozen_stages` backbone stages are frozen, the rest trains.
- lp_ft, gradual_unfreeze: phases, each trained as one of the above (tl.phases).

Frozen parameters get `requires_grad=False`, so autograd stores no activations for a frozen
prefix and the optimizer is built from trainable parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import nn

from tl.errors import ConfigError, not_one_of
from tl.models.backbones import Backbone
from tl.models.stages import matches

STRATEGIES = ("finetune", "freeze", "partial_freeze", "lp_ft", "gradual_unfreeze")
PHASED = ("lp_ft", "gradual_unfreeze")  # their `phases` say what trains when (tl.phases)
BN_MODES = ("eval", "train", "frozen")


@dataclass
class Plan:
    strategy: str
    frozen_stages: int
    bn: str
    frozen_modules: list[nn.Module]  # put back in eval mode after every model.train()
    trainable: int
    frozen: int
    head_modules: list[nn.Module] = field(default_factory=list)
    head_dropout: float = 0.0
    hooks: list = field(default_factory=list)  # removed when a later phase trains otherwise

    @property
    def backbone_in_eval(self) -> bool:
        """`freeze` runs the whole backbone as a fixed function: eval mode, dropout included."""
        return self.strategy == "freeze" and self.bn in ("eval", "frozen")

    def as_params(self) -> dict[str, int | str]:
        return {"params.trainable": self.trainable, "params.frozen": self.frozen,
                "params.total": self.trainable + self.frozen,
                "strategy.resolved_frozen_stages": self.frozen_stages,
                "strategy.head_dropout": self.head_dropout}


def frozen_stage_count(cfg, n_stages: int) -> int:
    if cfg.name not in STRATEGIES:
        raise not_one_of("strategy.name", cfg.name, STRATEGIES)
    if cfg.name in PHASED:
        raise ConfigError(f"strategy.name={cfg.name} trains in phases: build them with tl.training.phases.schedule")
    if cfg.name == "finetune":
        return 0
    if cfg.name == "freeze":
        return n_stages
    k = cfg.frozen_stages
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(f"strategy.frozen_stages={k!r} must be an integer >= 0")
    if k > n_stages:
        raise ConfigError(
            f"strategy.frozen_stages={k} but this model has {n_stages} stages: use 0..{n_stages}"
        )
    return k


def apply(backbone: Backbone, cfg, frozen_stages: int | None = None) -> Plan:
    """Freeze what `cfg` says. `frozen_stages`: the count a run has already checked against this
    backbone (`validate.frozen_stages`); None works it out here."""
    if cfg.bn not in BN_MODES:
        raise not_one_of("strategy.bn", cfg.bn, BN_MODES)
    model = backbone.model
    k = frozen_stage_count(cfg, len(backbone.stages)) if frozen_stages is None else frozen_stages
    frozen_names = {n for stage in backbone.stages[:k] for n in stage}
    if cfg.name == "freeze":  # everything but the head, whatever the stage lists cover
        frozen_names = {
            n for n, _ in model.named_parameters() if not any(matches(n, h) for h in backbone.head)
        }
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen_names)

    if frozen_names and cfg.bn == "frozen":
        _freeze_batchnorm(model, frozen_names)
    frozen_modules = _wholly_frozen(model, frozen_names) if cfg.bn == "eval" else []
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    plan = Plan(cfg.name, k, cfg.bn, frozen_modules, trainable, frozen,
                [model.get_submodule(h) for h in backbone.head], head_dropout(backbone))
    if plan.backbone_in_eval and plan.head_dropout > 0:
        # With the backbone in eval mode its own pre-classifier dropout is off; keep the
        # regulariser on the one part that trains, cached features or not.
        p = plan.head_dropout
        plan.hooks.append(plan.head_modules[-1].register_forward_pre_hook(
            lambda m, args: (F.dropout(args[0], p, training=m.training),) + tuple(args[1:])))
    return plan


def head_dropout(backbone: Backbone) -> float:
    """The dropout rate applied right before the classifier, whatever the family."""
    model = backbone.model
    if backbone.source in ("timm", "lite", "lite0"):
        return float(getattr(model, "drop_rate", 0.0) or 0.0)
    parent_name, _, leaf = backbone.head[-1].rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential):
        names = [n for n, _ in parent.named_children()]
        i = names.index(leaf)
        if i > 0 and isinstance(parent[i - 1], nn.Dropout):
            return float(parent[i - 1].p)
    return 0.0


def _wholly_frozen(model: nn.Module, frozen_names: set[str]) -> list[nn.Module]:
    """The outermost modules whose parameters are all frozen (and that have some)."""
    out, covered = [], []
    for name, m in model.named_modules():
        if any(name == c or name.startswith(c + ".") for c in covered):
            continue
        names = [f"{name}.{n}" if name else n for n, _ in m.named_parameters()]
        if names and all(n in frozen_names for n in names):
            out.append(m)
            covered.append(name)
    return out


def _freeze_batchnorm(model: nn.Module, frozen_names: set[str]) -> None:
    from timm.layers import freeze_batch_norm_2d

    for name, m in list(model.named_modules()):
        if isinstance(m, nn.BatchNorm2d) and f"{name}.weight" in frozen_names:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, freeze_batch_norm_2d(m))


def set_train_mode(model: nn.Module, plan: Plan) -> None:
    if plan.backbone_in_eval:
        model.eval()
        for m in plan.head_modules:
            m.train()
        return
    model.train()
    for m in plan.frozen_modules:
        m.eval()
