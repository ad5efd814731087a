"""Config values checked before any work starts; each error names the key and the fix.

`check(cfg)` needs the config alone; `frozen_stages(cfg, backbone)` needs the built backbone
(not the data), so a run makes it right after building the model, before scanning images."""

from __future__ import annotations

from tl.data import layout
from tl.data.datasets import DATASETS
from tl.errors import ConfigError, not_one_of
from tl.models.backbones import SOURCES, stage_count
from tl.runtime.paths import resolve
from tl.training import phases, rungs
from tl.training.optim import OPTIMIZERS, SCHEDULERS
from tl.training.strategies import BN_MODES, STRATEGIES, frozen_stage_count


def _positive_int(value, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive integer")


def check(cfg) -> None:
    t = cfg.trainer
    _positive_int(t.epochs, "trainer.epochs")
    _positive_int(t.batch_size, "trainer.batch_size")
    if t.get("eval_batch_size") is not None:
        _positive_int(t.eval_batch_size, "trainer.eval_batch_size")
    rungs.check(t)
    if t.seed is None or isinstance(t.seed, bool) or not isinstance(t.seed, int):
        raise ConfigError(f"trainer.seed={t.seed!r} must be an integer")
    lr = cfg.optimizer.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise ConfigError(f"optimizer.lr={lr!r} must be a number > 0")
    if cfg.model.get("name") in (None, "", "???"):
        raise ConfigError(f"model.name is not set: model={cfg.model.source} needs model.name=NAME")
    fs = cfg.tracking.get("flush_seconds", 0.0)
    if isinstance(fs, bool) or not isinstance(fs, (int, float)) or fs < 0:
        raise ConfigError(f"tracking.flush_seconds={fs!r} must be a number >= 0 (0: write every epoch)")
    _names(cfg)
    _val_fraction(cfg.dataset)
    rs = cfg.dataset.get("resample_splits", False)
    if not isinstance(rs, bool):
        raise ConfigError(f"dataset.resample_splits={rs!r} must be true (trainer.seed draws the carved "
                          "val/test splits) or false (dataset.split_seed does)")
    if phases.phased(cfg):  # phase lengths that cannot fit trainer.epochs, before any data is read
        phases.schedule(cfg)


def _names(cfg) -> None:
    for key, value, choices in (
        ("model.source", cfg.model.source, SOURCES), ("strategy.name", cfg.strategy.name, STRATEGIES),
        ("strategy.bn", cfg.strategy.bn, BN_MODES), ("dataset.name", cfg.dataset.name, DATASETS),
        ("optimizer.name", cfg.optimizer.name, OPTIMIZERS), ("scheduler.name", cfg.scheduler.name, SCHEDULERS),
    ):
        if value not in choices:
            raise not_one_of(key, value, choices)


def _val_fraction(d) -> None:
    """Checked here, not when the split happens: that comes after scanning every image."""
    vf = d.get("val_fraction")
    if vf is not None:
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 < vf < 1:
            raise ConfigError(f"dataset.val_fraction={vf!r} must be a number in (0, 1)")
    if d.name not in ("imagefolder", "hymenoptera") or d.get("root") in (None, "", "???"):
        return
    root = resolve(d.root)
    if root.is_dir():  # a layout error, too, before any image is read
        layout.check_fractions(layout.find(root, d.get("splits")), vf, d.get("test_fraction"))


def frozen_stages(cfg, schedule: list[phases.Phase], backbone) -> list[int]:
    """How many stages each phase freezes on this backbone, refused when it has fewer."""
    n_stages = stage_count(backbone, cfg.model.get("stages"))
    counts = []
    for phase in schedule:
        try:
            counts.append(frozen_stage_count(phase.cfg.strategy, n_stages))
        except ConfigError as e:
            if not phases.phased(cfg):
                raise
            raise ConfigError(f"strategy.phases[{phase.index}] ({phase.name}): {e}") from None
    return counts
