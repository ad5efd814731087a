"""A sweep's runs as replicate groups, one analysis per dataset.

Runs that differ only in `trainer.seed` form a group: same dataset identity (content and split
settings), backbone identity (source, name, weights; pretrained and scratch apart), strategy and
other swept overrides. Per dataset the groups get a selection metric (test acc when every
finished run has one, else best val acc), a cost (seconds each run would have taken alone:
total seconds with the backbone pass a feature-cache hit reused added back, else train seconds),
a mean with its interval, a test against the best group, and a place on or off the Pareto
front. Datasets are never pooled. Means within `stats.TIE` are a tie, won by the cheaper.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from statistics import fmean

from tl.analysis import pareto, stats
from tl.tracking.runs import SEED_KEY, Row


def without_seed(varied: str) -> str:
    """The swept overrides that make a group: all but the seed."""
    return " ".join(o for o in varied.split() if not o.startswith(SEED_KEY + "="))


@dataclass
class Group:
    data: str  # the dataset's label (its identity)
    model: str
    strategy: str
    varied: str  # other swept overrides, the seed aside
    rows: list[Row] = field(default_factory=list)  # finished, with the metric
    acc: stats.Interval | None = None  # over seeds: runs repeating a seed count once
    cost: float | None = None  # mean seconds per run, as if alone
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

    @property
    def duplicate_seeds(self) -> list[int]:
        return sorted(s for s, n in Counter(s for s in self.seeds if s is not None).items() if n > 1)

    @property
    def resampled(self) -> bool:
        """Whether its seeds saw different carved splits (dataset.split_seed differed)."""
        return len({r.split_seed for r in self.rows}) > 1

    @property
    def test_images(self) -> int | None:
        sizes = [r.test_images for r in self.rows if r.test_images]
        return Counter(sizes).most_common(1)[0][0] if sizes else None

    @property
    def cache_hits(self) -> int:
        return sum(r.feature_cache == "hit" for r in self.rows)

    def values_by_seed(self, key: str) -> dict:
        out: dict = {}
        for r in self.rows:
            out.setdefault(r.seed, []).append(getattr(r, key))
        return out

    def replicates(self, key: str) -> list[float]:
        """One value per seed (runs of one seed averaged: a repeat is not a replicate); each run
        whose seed was not logged counts as its own."""
        by = self.values_by_seed(key)
        return [fmean(v) for s, v in by.items() if s is not None] + by.get(None, [])


@dataclass
class Dataset:
    label: str
    metric_key: str  # Row attribute: "test_acc" or "best_val_acc"
    metric: str  # how it reads: "test acc" / "best val acc"
    cost_key: str | None  # "total_seconds" / "train_seconds"; None: no run logged a time
    notes: list[str]  # what fell back, and why
    groups: list[Group]  # ranked, best first
    confidence: float
    errors: list[str] = field(default_factory=list)  # what makes part of the answer wrong
    failed: list[Row] = field(default_factory=list)  # runs with no usable metric, and why

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
        broken = sum("test_acc" in r.nonfinite for r in done)
        why = f" ({broken} logged a NaN or inf test acc)" if broken else ""
        return "best_val_acc", "best val acc", [
            f"only {with_test} of {len(done)} runs have a test split{why}, so all are ranked by best val acc "
            "(the split that picked their epoch: an optimistic estimate)"]
    return "best_val_acc", "best val acc", [
        "no test split in these runs: ranked by best val acc, the split that also picked the epoch, "
        "so it overstates; a test/ folder next to train/ and val/ gives an unbiased test acc"]


def _choose_cost(done) -> tuple[str | None, list[str]]:
    if _all_have(done, "total_seconds"):
        notes = []
        hits = [r for r in done if r.feature_cache == "hit"]
        unknown = [r for r in hits if r.feature_pass_seconds is None]
        if hits:
            notes.append(f"{len(hits)} run(s) reused cached backbone features: their cost adds back the "
                         "backbone pass they reused (feature_pass_seconds), the cost they would have had alone")
        short = [r for r in done if r.train_seconds is not None and r.total_seconds < r.train_seconds]
        if short:
            notes.append(f"{len(short)} run(s) logged total_seconds below their train_seconds (a resume that "
                         "counted its last process only): costed at their train_seconds at least")
        if unknown:
            notes.append(f"{len(unknown)} cache hit(s) logged no feature_pass_seconds (older runs): their "
                         "cost leaves out the backbone pass and looks cheaper than a run alone")
        return "total_seconds", notes
    if _all_have(done, "train_seconds"):
        return "train_seconds", ["cost is train seconds: these runs logged no total_seconds, so decoding, "
                                 "feature extraction and evaluation are left out"]
    return None, ["no run time logged: no cost, no Pareto front"]


def _cost(r: Row, cost_key: str) -> float:
    return r.cost_alone if cost_key == "total_seconds" else r.train_seconds


def rank_groups(groups: list[Group]) -> list[Group]:
    """Best mean first; means within stats.TIE are a tie, ordered cheapest first."""
    by_mean = sorted(groups, key=lambda g: -g.acc.mean)
    out: list[Group] = []
    while by_mean:
        top = by_mean[0].acc.mean
        tied = [g for g in by_mean if stats.tied(g.acc.mean, top)]
        out += sorted(tied, key=lambda g: g.cost if g.cost is not None else math.inf)
        by_mean = [g for g in by_mean if g not in tied]
    return out


def _usable(r: Row) -> bool:
    return r.status == "FINISHED" and r.best_val_acc is not None


def failure(r: Row) -> str:
    """Why a run is not counted: its status and error, or the metric it lacks."""
    if r.status != "FINISHED":
        return r.status + (f": {r.error}" if r.error else "")
    return r.error or "no best_val_acc logged"


def _group(rows: list[Row], metric_key: str, cost_key: str | None, confidence: float) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for r in rows:
        k = (r.backbone, r.strategy, without_seed(r.varied))
        groups.setdefault(k, Group(r.dataset, r.model, r.strategy, k[2])).rows.append(r)
    for g in groups.values():
        g.acc = stats.interval(g.replicates(metric_key), confidence)
        g.cost = fmean(_cost(r, cost_key) for r in g.rows) if cost_key else None
    return list(groups.values())


def analyse(rows, confidence: float = stats.CONFIDENCE) -> dict[str, Dataset]:
    """Per dataset identity (in first-seen order), its groups ranked by mean metric."""
    out = {}
    for key in dict.fromkeys(r.data_key for r in rows):
        mine = [r for r in rows if r.data_key == key]
        done = [r for r in mine if _usable(r)]
        metric_key, metric, notes = choose_metric(done) if done else ("best_val_acc", "best val acc", [])
        done = [r for r in done if getattr(r, metric_key) is not None]
        failed = [r for r in mine if r not in done]
        if not done:
            out[key] = Dataset(mine[0].dataset, metric_key, metric, None, notes, [], confidence, [], failed)
            continue
        cost_key, cost_notes = _choose_cost(done)
        ranked = rank_groups(_group(done, metric_key, cost_key, confidence))
        best = ranked[0]
        best.best = True
        for g in ranked[1:]:
            g.vs_best = stats.compare(best.values_by_seed(metric_key), g.values_by_seed(metric_key), confidence)
            g.indistinguishable = g.vs_best.indistinguishable(1 - confidence)
        if cost_key:
            on = pareto.front([(g.cost, g.acc.mean) for g in ranked])
            for i, g in enumerate(ranked):
                g.on_front = i in on
        errors = [f"{g.label} ran seed{'s' if len(g.duplicate_seeds) > 1 else ''} "
                  f"{','.join(map(str, g.duplicate_seeds))} more than once (a repeat, not a replicate: "
                  "each seed counts once, its runs averaged); give each job its own trainer.seed"
                  for g in ranked if g.duplicate_seeds]
        out[key] = Dataset(mine[0].dataset, metric_key, metric, cost_key, notes + cost_notes, ranked,
                           confidence, errors, failed)
    return out


def by_rank(rows: list[Row], datasets: dict[str, Dataset]) -> list[Row]:
    """The runs per dataset (datasets by key), best first by the metric their groups are ranked
    by; ties go to the cheaper, then the lower final val loss; runs without the metric last."""
    order = {k: i for i, k in enumerate(sorted({r.data_key for r in rows}))}

    def key(r: Row):
        ds = datasets.get(r.data_key)
        score = getattr(r, ds.metric_key if ds else "best_val_acc")
        cost = (r.cost_alone if ds and ds.cost_key == "total_seconds" else r.train_seconds)
        return (order[r.data_key], score is None, -round((score or 0.0) / stats.TIE),
                cost if cost is not None else math.inf,
                r.final_val_loss if r.final_val_loss is not None else math.inf)

    return sorted(rows, key=key)


def best_runs(datasets: dict[str, Dataset]) -> set[str]:
    """The runs of each dataset's best group: what `*` marks in every table."""
    return {r.run_id for ds in datasets.values() if ds.best for r in ds.best.rows}
