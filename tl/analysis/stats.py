"""Replicate statistics for `tl compare`: the mean and confidence interval of a group of seeds,
and whether two groups can be told apart.

Runs of one group differ only in `trainer.seed`; the seed fixes the shuffle, the augmentations
and the head's initialisation, and the carved val/test split only with
`dataset.resample_splits=true` (otherwise `dataset.split_seed` fixes it for every seed). Two
groups that share a seed share that order (and split), so the fair comparison is paired over
shared seeds: a paired t-test on the per-seed differences, which removes the part of the noise
both groups see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean

from scipy import stats as _scipy

CONFIDENCE = 0.95
EPS = 1e-12  # accuracies are ratios of counts: differences below this are float rounding


@dataclass(frozen=True)
class Interval:
    mean: float
    n: int
    half_width: float | None  # None: one value, no interval can be estimated

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width


def interval(values: list[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and the two-sided Student t interval of the mean: mean ± t(n-1) * s / sqrt(n)."""
    if not values:
        raise ValueError("interval() of no values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n, mean = len(values), fmean(values)
    if n < 2:
        return Interval(mean, n, None)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = _scipy.t.ppf(0.5 + confidence / 2, df=n - 1)
    return Interval(mean, n, float(t * sd / math.sqrt(n)))


@dataclass(frozen=True)
class Comparison:
    """How a group compares with the best: `p` is None where no test was possible."""
    method: str  # "paired t-test", "Welch t-test", or why there is none
    n: int  # seeds paired, or the smaller group's size for Welch
    p: float | None

    def indistinguishable(self, alpha: float) -> bool | None:
        return None if self.p is None else self.p >= alpha


def _per_seed(values: dict[int, list[float]]) -> dict[int, float]:
    return {seed: fmean(v) for seed, v in values.items() if v}


def compare(best: dict[int, list[float]], other: dict[int, list[float]]) -> Comparison:
    """Two-sided test of "same mean" between two groups, given each one's values by seed.

    Paired t-test over the seeds both groups ran (at least 2). Without 2 shared seeds, Welch's
    unequal-variance t-test when both have at least 2 values. Otherwise no test: one run per
    group says nothing about noise.
    """
    a, b = _per_seed(best), _per_seed(other)
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        diffs = [a[s] - b[s] for s in shared]
        if max(diffs) - min(diffs) <= EPS:  # no spread: t is 0/0 or x/0, the answer is not
            return Comparison("paired t-test", len(shared), 1.0 if abs(fmean(diffs)) <= EPS else 0.0)
        p = _scipy.ttest_rel([a[s] for s in shared], [b[s] for s in shared]).pvalue
        return Comparison("paired t-test", len(shared), float(p))
    xa = [v for vs in best.values() for v in vs]
    xb = [v for vs in other.values() for v in vs]
    if len(xa) >= 2 and len(xb) >= 2:
        if max(xa) - min(xa) <= EPS and max(xb) - min(xb) <= EPS:
            same = abs(fmean(xa) - fmean(xb)) <= EPS
            return Comparison("Welch t-test", min(len(xa), len(xb)), 1.0 if same else 0.0)
        p = _scipy.ttest_ind(xa, xb, equal_var=False).pvalue
        return Comparison("Welch t-test", min(len(xa), len(xb)), float(p))
    return Comparison("no test: fewer than 2 seeds", min(len(xa), len(xb)), None)
