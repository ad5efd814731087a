"""The answer's search space: backbone x strategy x a small learning-rate grid per strategy.

The grids come from `conf/answer/<recipes>.yaml` (see the comments there for why each strategy
searches its own rates), with `hydra.sweeper.lr.<strategy>=[...]` on top."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from tl.errors import ConfigError
from tl.runtime import paths

HEAD = "freeze"  # the strategy the screen tunes on cached features


@dataclass(frozen=True)
class Recipe:
    model: str
    strategy: str
    lr: float
    weight_decay: float = 0.0
    extra: tuple[str, ...] = ()  # the strategy's own overrides from the recipes file

    def overrides(self) -> list[str]:
        return [f"model={self.model}", f"strategy={self.strategy}", f"optimizer.lr={self.lr:g}",
                f"optimizer.weight_decay={self.weight_decay:g}", *self.extra]

    @property
    def label(self) -> str:
        wd = f" wd={self.weight_decay:g}" if self.weight_decay else ""
        return f"{self.model} {self.strategy} lr={self.lr:g}{wd}"


def load_recipes(name: str, lr_overrides: dict | None = None) -> dict:
    """The recipes file as a plain dict, with `lr` grids given on the command line on top."""
    path = Path(name) if name.endswith(".yaml") else paths.conf_dir() / "answer" / f"{name}.yaml"
    if not path.is_file():
        found = sorted(p.stem for p in (paths.conf_dir() / "answer").glob("*.yaml"))
        raise ConfigError(f"hydra.sweeper.recipes={name!r}: no {path} (recipes in conf/answer: {', '.join(found)})")
    recipes = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    for strategy, grid in (lr_overrides or {}).items():
        if grid is None:
            continue
        recipes.setdefault("lr", {})[strategy] = list(grid) if isinstance(grid, (list, tuple)) else [grid]
    return recipes


def _grid(recipes: dict, key: str, strategy: str, default: list) -> list[float]:
    values = (recipes.get(key) or {}).get(strategy, default)
    values = values if isinstance(values, list) else [values]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (key == "lr" and v == 0):
            raise ConfigError(f"answer recipes: {key}.{strategy} holds {v!r}; give numbers > 0, e.g. [0.01, 0.003]")
    if not values:
        raise ConfigError(f"answer recipes: {key}.{strategy} is empty; give at least one value")
    return [float(v) for v in values]


def recipes_for(models: list[str], strategy: str, recipes: dict, base_wd: float) -> list[Recipe]:
    """Every (model, lr, weight decay) of one strategy's grid, model by model."""
    if strategy not in (recipes.get("lr") or {}):
        raise ConfigError(f"answer recipes have no learning-rate grid for strategy {strategy!r}: "
                          f"add lr.{strategy}: [...] to the recipes file or hydra.sweeper.lr.{strategy}=[...]")
    lrs = _grid(recipes, "lr", strategy, [])
    wds = _grid(recipes, "weight_decay", strategy, [base_wd])
    extra = tuple(str(o) for o in (recipes.get("extra") or {}).get(strategy, []))
    return [Recipe(m, strategy, lr, wd, extra) for m in models for lr in lrs for wd in wds]


def axes(recipes: list[Recipe]) -> tuple[list[float], list[float]]:
    """The learning rates and weight decays a grid of recipes spans, each once, in order (the
    order `head_grid.settings` pairs them in, learning rate major)."""
    return list(dict.fromkeys(r.lr for r in recipes)), list(dict.fromkeys(r.weight_decay for r in recipes))


def race_grid(models: list[str], strategies: list[str], recipes: dict, base_wd: float) -> list[Recipe]:
    """The recipes the race starts with: every strategy but the head's, whose grid the screen runs."""
    return [r for s in strategies if s != HEAD for r in recipes_for(models, s, recipes, base_wd)]


def head_grid(models: list[str], recipes: dict, base_wd: float) -> list[Recipe]:
    return recipes_for(models, HEAD, recipes, base_wd)
