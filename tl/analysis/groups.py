"""A sweep's runs as replicate groups, one analysis per dataset.

Runs that differ only in `trainer.seed` form a group: same dataset identity, model label
(pretrained and scratch apart), strategy and other swept overrides. Per dataset the groups get
a selection metric (test acc when every finished run has one, else best val acc), a cost (total
seconds when every finished run logged it, else train seconds), a mean with its interval, a test
against the best group, and a place on or off the Pareto front. Datasets are never pooled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import fmean

from tl.analysis import pareto, stats

SEED_KEY = "trainer.seed"


def without_seed(varied: str) -> str:
    """The swept overrides that make a group: all but the seed."""
    return " ".join(o for o in varied.split() if not o.startswith(SEED_KEY + "="))


@dataclass
class Group:
    data: str  # the dataset's label (its identity)
    model: str
    strategy: str
    varied: str  # other swept overrides, the seed aside
    rows: list = field(default_factory=list)  # compare.Row, finished, with the metric
    acc: stats.Interval | None = None
    cost: float | None = None  # mean seconds
    vs_best: stats.Comparison | None = None  # None for the best itself
    indistinguishable: bool | None = None  # from the best; None: unknown (too few seeds)
    best: bool = False
    on_front: bool = False

    @property
    def label(self) -> str:
        return f"{self.model} + {self.strategy}" + (f" ({self.varied})" if self.varied else "")

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.rows]

    def values_by_seed(self, key: str) -> dict:
        out: dict = {}
        for r in self.rows:
            out.setdefault(r.seed, []).append(getattr(r, key))
        return out


@dataclass
class Dataset:
    label: str
    metric_key: str  # Row attribute: "test_acc" or "best_val_acc"
    metric: str  # how it reads: "test acc" / "best val acc"
    cost_key: str | None  # "total_seconds" / "train_seconds"; None: no run logged a time
    notes: list[str]  # what fell back, and why
    groups: list[Group]  # ranked, best first
    confidence: float

    @property
    def best(self) -> Group | None:
        return self.groups[0] if self.groups else None

    @property
    def cost(self) -> str:
        return {"total_seconds": "total s", "train_seconds": "train s"}.get(self.cost_key, "s")


def _all_have(rows, key: str) -> bool:
    return all(getattr(r, key) is not None for r in rows)


def choose_metric(done) -> tuple[str, str, list[str]]:
    """(Row attribute, its name, notes) of what ranks one dataset's finished runs: one metric for
    all of them, never test acc for some and val acc for others."""
    with_test = sum(r.test_acc is not None for r in done)
    if with_test == len(done):
        return "test_acc", "test acc", []
    if with_test:
        return "best_val_acc", "best val acc", [
            f"only {with_test} of {len(done)} runs have a test split, so all are ranked by best val acc "
            "(the split that picked their epoch: an optimistic estimate)"]
    return "best_val_acc", "best val acc", [
        "no test split in these runs: ranked by best val acc, the split that also picked the epoch, "
        "so it overstates; a test/ folder next to train/ and val/ gives an unbiased test acc"]


def _choose_cost(done) -> tuple[str | None, list[str]]:
    if _all_have(done, "total_seconds"):
        return "total_seconds", []
    if _all_have(done, "train_seconds"):
        return "train_seconds", ["cost is train seconds: these runs logged no total_seconds, so decoding, "
                                 "feature extraction and evaluation are left out"]
    return None, ["no run time logged: no cost, no Pareto front"]


def analyse(rows, confidence: float = stats.CONFIDENCE) -> dict[str, Dataset]:
    """Per dataset identity (in first-seen order), its groups ranked by mean metric."""
    out = {}
    alpha = 1 - confidence
    for key in dict.fromkeys(r.data_key for r in rows):
        mine = [r for r in rows if r.data_key == key]
        done = [r for r in mine if r.status == "FINISHED" and r.best_val_acc is not None]
        if not done:
            continue
        metric_key, metric, notes = choose_metric(done)
        cost_key, cost_notes = _choose_cost(done)
        groups: dict[tuple, Group] = {}
        for r in done:
            k = (r.model, r.strategy, without_seed(r.varied))
            groups.setdefault(k, Group(r.dataset, *k)).rows.append(r)
        for g in groups.values():
            g.acc = stats.interval([getattr(r, metric_key) for r in g.rows], confidence)
            g.cost = fmean(getattr(r, cost_key) for r in g.rows) if cost_key else None
        ranked = sorted(groups.values(), key=lambda g: (-g.acc.mean, g.cost if g.cost is not None else math.inf))
        best = ranked[0]
        best.best = True
        for g in ranked[1:]:
            g.vs_best = stats.compare(best.values_by_seed(metric_key), g.values_by_seed(metric_key))
            g.indistinguishable = g.vs_best.indistinguishable(alpha)
        if cost_key:
            on = pareto.front([(g.cost, g.acc.mean) for g in ranked])
            for i, g in enumerate(ranked):
                g.on_front = i in on
        out[key] = Dataset(mine[0].dataset, metric_key, metric, cost_key, notes + cost_notes, ranked, confidence)
    return out


def pareto_figure(datasets: dict[str, Dataset]):
    panels = {}
    for ds in datasets.values():
        if ds.cost_key is None:
            continue
        points = [pareto.Point(g.label, g.cost, g.acc.mean, g.acc.low, g.acc.high, g.on_front, g.best)
                  for g in ds.groups]
        cost = "total seconds per run" if ds.cost_key == "total_seconds" else "train seconds per run"
        panels[ds.label] = (points, f"{ds.metric} (mean, {ds.confidence:.0%} CI)", cost)
    return pareto.plot(panels)
