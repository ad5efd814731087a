"""`tl reproduce RUN_ID`: train a logged run again and say whether its per-epoch metrics match
(`tl.training.reproduce` recomposes, checks, reruns and compares; this prints)."""

from __future__ import annotations

import sys

from tl.training import reproduce


def _say(msg: str) -> None:
    print(msg, flush=True)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def run(uri: str, run_id: str, tolerance: float | None) -> int:
    """0: every per-epoch metric matches; 1: some differ (a TLError, exit status 2, when the run
    cannot be reproduced at all)."""
    outcome = reproduce.reproduce(uri, run_id, tolerance, _say, _warn)
    diffs = outcome.differences
    if not diffs:
        _say(f"Reproduced: every per-epoch metric is identical ({outcome.compared}).")
        return 0
    _say(f"NOT reproduced: {len(diffs)} per-epoch values differ ({outcome.compared}):")
    for d in diffs[:reproduce.MAX_SHOWN]:
        _say(f"  {d.describe()}")
    if len(diffs) > reproduce.MAX_SHOWN:
        _say(f"  ... {len(diffs) - reproduce.MAX_SHOWN} more")
    first = outcome.first()
    _say(f"First difference: {first.metric} at epoch {first.epoch}.")
    return 1
