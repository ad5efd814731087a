"""Transfer strategies: which parameters train, and what frozen BatchNorm does.

- finetune: everything trains.
- freeze: only the new head trains; the backbone is a fixed feature extractor.
- partial_freeze: the first `frozen_stages` backbone stages are frozen, the rest trains.

Frozen parameters get `requires_grad=False`, so autograd stores no activations for a frozen
prefix and the optimizer is built from trainable parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tl.backbones import Backbone
from tl.errors import ConfigError
from tl.stages import matches

STRATEGIES = ("finetune", "freeze", "partial_freeze")
BN_MODES = ("eval", "train", "frozen")


@dataclass
class Plan:
    strategy: str
    frozen_stages: int
    bn: str
    frozen_modules: list[nn.Module]  # put back in eval mode after every model.train()
    trainable: int
    frozen: int

    def as_params(self) -> dict[str, int | str]:
        return {"params.trainable": self.trainable, "params.frozen": self.frozen,
                "params.total": self.trainable + self.frozen,
                "strategy.resolved_frozen_stages": self.frozen_stages}


def frozen_stage_count(cfg, n_stages: int) -> int:
    if cfg.name not in STRATEGIES:
        raise ConfigError(f"strategy.name={cfg.name!r} is not one of {', '.join(STRATEGIES)}")
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


def apply(backbone: Backbone, cfg) -> Plan:
    if cfg.bn not in BN_MODES:
        raise ConfigError(f"strategy.bn={cfg.bn!r} is not one of {', '.join(BN_MODES)}")
    model = backbone.model
    k = frozen_stage_count(cfg, len(backbone.stages))
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
    return Plan(cfg.name, k, cfg.bn, frozen_modules, trainable, frozen)


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
    model.train()
    for m in plan.frozen_modules:
        m.eval()
