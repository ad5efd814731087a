"""Config values checked before any work starts; each error names the key and the fix."""

from __future__ import annotations

from tl.errors import ConfigError


def _positive_int(value, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive integer")


def check(cfg) -> None:
    t = cfg.trainer
    _positive_int(t.epochs, "trainer.epochs")
    _positive_int(t.batch_size, "trainer.batch_size")
    if t.get("eval_batch_size") is not None:
        _positive_int(t.eval_batch_size, "trainer.eval_batch_size")
    if t.seed is None or isinstance(t.seed, bool) or not isinstance(t.seed, int):
        raise ConfigError(f"trainer.seed={t.seed!r} must be an integer")
    lr = cfg.optimizer.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise ConfigError(f"optimizer.lr={lr!r} must be a number > 0")
    if cfg.model.get("name") in (None, "", "???"):
        raise ConfigError(f"model.name is not set: model={cfg.model.source} needs model.name=NAME")
