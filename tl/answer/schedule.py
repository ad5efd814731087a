"""Successive halving by epochs: the rungs and who is promoted.

Every trial is configured for the same final schedule (`trainer.epochs=E`) and trained to the
rung's epoch (`trainer.stop_after`); a promoted trial continues its own run from its checkpoint,
so its curve is exactly what an uninterrupted run would have logged. Each rung is one batch for
Hydra's launcher, so the race runs on every launcher (basic, joblib, Ray, submitit).

A plain schedule rather than Optuna's pruners: a Hydra job can report nothing to the sweeper
before it returns (hydra#3201), so a pruner could only be fed rung by rung, after each batch, and
the bookkeeping it would add (who is promoted at a rung) is the sort below. Its state lives in
the MLflow runs themselves, which is what `--resume` reads back.
"""

from __future__ import annotations

import math

from tl.errors import ConfigError


def rungs(epochs: int, min_epochs: int, eta: int) -> list[int]:
    """The epochs at which the race compares trials: min_epochs x eta^k, ending at `epochs`."""
    for key, value in (("epochs", epochs), ("min_epochs", min_epochs), ("eta", eta)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"hydra.sweeper.{key}={value!r} must be a positive integer")
    if eta < 2:
        raise ConfigError(f"hydra.sweeper.eta={eta} must be at least 2 (keep the top 1/eta at each rung)")
    out, e = [], min_epochs
    while e < epochs:
        out.append(e)
        e *= eta
    return [*out, epochs]


def promote(scores: dict[str, float | None], eta: int) -> tuple[list[str], list[str]]:
    """(promoted, dropped): the top ceil(n/eta) by score; a trial without a score (it failed) is
    dropped. Ties are promoted together, so no trial is dropped for its position in a list."""
    ok = sorted((k for k, v in scores.items() if v is not None), key=lambda k: -scores[k])
    if not ok:
        return [], list(scores)
    n = max(1, math.ceil(len(ok) / eta))
    cut = scores[ok[n - 1]]
    kept = [k for k in ok if scores[k] >= cut]
    return kept, [k for k in scores if k not in kept]
