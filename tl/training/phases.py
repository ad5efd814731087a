"""Strategies in phases: what trains, at which learning rate, for how many epochs.

A strategy with a `phases` list (`lp_ft`, `gradual_unfreeze`) trains in consecutive phases;
every other strategy is one phase, its whole run. Each phase is written out in the strategy's
config:

    phases:
      - name: probe
        epochs: 5            # or `rest` (last phase only): trainer.epochs minus the phases before
        frozen_stages: all   # all: only the new head trains; 0: everything; k: the first k stages frozen
        lr: null             # null: optimizer.lr
        lr_scale: 1.0        # the phase's LR is (lr or optimizer.lr) x lr_scale
        lr_mult: null        # per-stage multipliers of the phase's LR (see tl.param_groups)

A phase trains exactly like the plain strategy with the same frozen stages (`freeze`,
`partial_freeze`, `finetune`): a head-only phase trains on cached features when the strategy's
`feature_cache` is enabled. At each boundary the trained weights are kept and the freezing,
the optimizer and the LR schedule are rebuilt for the new phase, from its config alone: no LR
is changed that the config does not say.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf, open_dict

from tl.errors import ConfigError

PHASED = ("lp_ft", "gradual_unfreeze")
KEYS = ("name", "epochs", "frozen_stages", "lr", "lr_scale", "lr_mult")
REST = "rest"


@dataclass(frozen=True)
class Phase:
    index: int
    name: str
    start: int   # its first epoch, counted from 1 over the whole run
    epochs: int
    cfg: DictConfig  # the run's config as this phase trains: a plain strategy, the phase's LR
    asked: int | str | None = None  # the epochs its config asks (an int, or `rest`)

    @property
    def end(self) -> int:
        return self.start + self.epochs - 1


def phased(cfg) -> bool:
    return cfg.strategy.get("phases") is not None


def _number(value, key: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key}={value!r} must be a number > 0{' (or null)' if allow_none else ''}")


def _epochs(specs: list[dict], total: int) -> list[int]:
    fixed = 0
    for i, s in enumerate(specs):
        e, key = s.get("epochs"), f"strategy.phases[{i}].epochs"
        if e == REST:
            if i != len(specs) - 1:
                raise ConfigError(f"{key}=rest: only the last phase may take the rest of trainer.epochs")
            continue
        if isinstance(e, bool) or not isinstance(e, int) or e <= 0:
            raise ConfigError(f"{key}={e!r} must be a positive integer (or `rest` on the last phase)")
        fixed += e
    if specs[-1].get("epochs") == REST:
        if total < len(specs):
            raise ConfigError(f"strategy.phases has {len(specs)} phases of at least one epoch each, but "
                              f"trainer.epochs={total}: raise trainer.epochs to {len(specs)} or more")
        return _capped([s["epochs"] for s in specs[:-1]], total - 1) + [total - min(fixed, total - 1)]
    if fixed != total:
        raise ConfigError(f"strategy.phases last {fixed} epochs but trainer.epochs={total}: set "
                          f"trainer.epochs={fixed}, or give the last phase `epochs: rest`")
    return [s["epochs"] for s in specs]


def _capped(asked: list[int], budget: int) -> list[int]:
    """The phases before a `rest` phase, cut to fit `budget` epochs (trainer.epochs minus the
    last phase's one): in order, each keeping at least one epoch for every phase after it.
    A short run (e.g. `lp_ft trainer.epochs=4`, probe_epochs 5) still runs every phase."""
    out = []
    for i, e in enumerate(asked):
        later = len(asked) - i - 1
        out.append(max(1, min(e, budget - sum(out) - later)))
    return out


def adjusted(schedule: list[Phase]) -> list[str]:
    """The phases whose length differs from what their config asks (capped to fit a short run)."""
    notes = []
    for p in schedule[:-1]:
        if isinstance(p.asked, int) and p.asked != p.epochs:
            notes.append(f"{p.name} {p.epochs} of its {p.asked} epochs")
    return notes


def lengths(schedule: list[Phase]) -> str:
    """What each phase trains, as logged: `probe:3,finetune:1`."""
    return ",".join(f"{p.name}:{p.epochs}" for p in schedule)


def _strategy(spec: dict, i: int, strategy, backbone_trained: bool) -> dict:
    """The plain strategy a phase trains as. Cached features are the pretrained backbone's, so
    a head-only phase uses them only while no phase before it trained the backbone."""
    k, key = spec.get("frozen_stages"), f"strategy.phases[{i}].frozen_stages"
    if k == "all":
        name = "freeze"
    elif isinstance(k, int) and not isinstance(k, bool) and k >= 0:
        name = "finetune" if k == 0 else "partial_freeze"
    else:
        raise ConfigError(f"{key}={k!r} must be `all` (only the head trains), 0 (everything) or the "
                          "number of first stages to freeze")
    mult = spec.get("lr_mult")
    if isinstance(mult, list):
        for j, m in enumerate(mult):
            _number(m, f"strategy.phases[{i}].lr_mult[{j}]")
    else:
        _number(mult, f"strategy.phases[{i}].lr_mult", allow_none=True)
    out = {"name": name, "frozen_stages": k, "bn": strategy.bn, "lr_mult": mult,
           "lr_mult_key": f"strategy.phases[{i}].lr_mult"}
    if strategy.get("feature_cache") is not None:
        out["feature_cache"] = OmegaConf.to_container(strategy.feature_cache, resolve=True)
        if backbone_trained:
            out["feature_cache"]["enabled"] = False
    return out


def schedule(cfg) -> list[Phase]:
    """The run's phases in order; one phase, `cfg` itself, for a strategy without phases."""
    if not phased(cfg):
        return [Phase(0, str(cfg.strategy.name), 1, int(cfg.trainer.epochs), cfg)]
    strategy = cfg.strategy
    specs = OmegaConf.to_container(strategy.phases, resolve=True)
    if not isinstance(specs, list) or not specs or not all(isinstance(s, dict) for s in specs):
        raise ConfigError(f"strategy.phases must be a non-empty list of phases (mappings), got {specs!r}")
    if strategy.bn == "frozen":
        raise ConfigError("strategy.bn=frozen replaces BatchNorm layers for good, so a later phase could "
                          f"not train them: use strategy.bn=eval with strategy={strategy.name}")
    for i, s in enumerate(specs):
        unknown = sorted(set(s) - set(KEYS))
        if unknown:
            raise ConfigError(f"strategy.phases[{i}] has unknown keys {unknown}: a phase takes {', '.join(KEYS)}")
        _number(s.get("lr"), f"strategy.phases[{i}].lr", allow_none=True)
        _number(s.get("lr_scale", 1.0), f"strategy.phases[{i}].lr_scale")
    out, start = [], 1
    for i, (s, epochs) in enumerate(zip(specs, _epochs(specs, int(cfg.trainer.epochs)))):
        pcfg = copy.deepcopy(cfg)
        base = s.get("lr") if s.get("lr") is not None else cfg.optimizer.lr
        trained = any(p.get("frozen_stages") != "all" for p in specs[:i])
        with open_dict(pcfg):
            pcfg.strategy = _strategy(s, i, strategy, trained)
            pcfg.optimizer.lr = float(base) * float(s.get("lr_scale", 1.0))
        out.append(Phase(i, str(s.get("name") or f"phase{i}"), start, epochs, pcfg, s.get("epochs")))
        start += epochs
    return out


def at(phases: list[Phase], epoch: int) -> Phase:
    """The phase epoch `epoch` trains in; epoch 0 (nothing trained yet) is in the first."""
    for phase in phases:
        if epoch <= phase.end:
            return phase
    return phases[-1]


def describe(phases: list[Phase]) -> str:
    return "; ".join(f"{p.name}: epochs {p.start}-{p.end}, {p.cfg.strategy.name}"
                     f"{'' if p.cfg.strategy.name != 'partial_freeze' else f' {p.cfg.strategy.frozen_stages}'}"
                     f", lr {p.cfg.optimizer.lr:g}" for p in phases)
