"""The answer's wall-clock budget, and what each stage will cost from the rates measured so far.

Trials are launched in batches no larger than the launcher runs at once, and a batch starts
only when its estimated cost fits in what is left, so the sweep ends within the budget plus at
most the overrun of one batch (one trial's rung per worker)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from tl.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse(text) -> float:
    """Seconds in `30m`, `1h30m`, `90s`, `1.5h` or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text > 0:
        return float(text)
    s = str(text).strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh])", s)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smh])", "", s).strip():
        raise ConfigError(f"budget {text!r} is not a duration: write e.g. 20m, 1h30m or 90s")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"budget {text!r} must be longer than 0, e.g. 20m")
    return seconds


class Budget:
    def __init__(self, seconds: float, clock=time.monotonic, started: float | None = None):
        """`started`: when the budget began on `clock` (default: now), e.g. the process's start."""
        self.seconds, self.clock = float(seconds), clock
        self.started = clock() if started is None else started

    def spent(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return self.seconds - self.spent()


# Phased strategies end as a full fine-tune; their first epochs (lp_ft's linear probe on cached
# features: milliseconds) say nothing of the later ones, so a trial continued past them is
# costed at the fine-tune's rate (on the tutorial's data: 0.0 s for lp_ft's first epoch, 50 s
# for each next one, which an estimate from the first put at 9 s a trial).
ENDS_AS = {"lp_ft": "finetune", "gradual_unfreeze": "finetune"}


@dataclass
class Rates:
    """Seconds per epoch for each (model, strategy), and per run of start-up (process, data,
    model), learned from the trials as they finish; before any, a guess from the frozen pass."""

    epoch: dict = field(default_factory=dict)    # (model, strategy) -> seconds per epoch
    frozen_pass: dict = field(default_factory=dict)  # model -> seconds of one frozen pass over the data
    overhead: float = 5.0  # a run's seconds besides its epochs; replaced by the measured value
    train_factor: float = 3.0  # a training epoch of a backbone against one frozen pass (backward, augmentation)

    def epoch_seconds(self, model: str, strategy: str) -> float:
        if strategy in ENDS_AS:  # its later epochs cost what the strategy it ends as costs
            return max(self.epoch.get((model, strategy), 0.0), self.epoch_seconds(model, ENDS_AS[strategy]))
        if (model, strategy) in self.epoch:
            return self.epoch[(model, strategy)]
        same = [v for (m, s), v in self.epoch.items() if s == strategy]
        if strategy == "freeze":  # a head on cached features: milliseconds an epoch
            return self.epoch.get((model, strategy), 0.05)
        if model in self.frozen_pass:
            return self.train_factor * self.frozen_pass[model]
        return max(same) if same else max(self.epoch.values(), default=30.0)

    def measured(self, model: str, strategy: str) -> bool:
        return (model, ENDS_AS.get(strategy, strategy)) in self.epoch

    def run_seconds(self, model: str, strategy: str, epochs: int) -> float:
        return self.overhead + epochs * self.epoch_seconds(model, strategy)

    def learn(self, model: str, strategy: str, epochs: int, train_seconds: float) -> None:
        if epochs > 0 and train_seconds > 0:
            self.epoch[(model, strategy)] = train_seconds / epochs

    def learn_overhead(self, wall: float, train_seconds: float, runs: int, parallel: int) -> None:
        """A batch's wall time beyond its epochs, per run (runs in parallel share it)."""
        if runs:
            per = max(0.0, wall * min(parallel, runs) - train_seconds) / runs
            self.overhead = 0.5 * self.overhead + 0.5 * per


def batch_wall(costs: list[float], parallel: int) -> float:
    """A batch's wall time: its runs spread over `parallel` workers, never less than the longest."""
    if not costs:
        return 0.0
    return max(max(costs), sum(costs) / max(1, min(parallel, len(costs))))


def fmt(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
