"""Replicate statistics for `tl compare`: the mean and confidence interval of a group of seeds,
and whether two groups can be told apart.

Runs of one group differ only in `trainer.seed`; the seed fixes the shuffle, the augmentations
and the head's initialisation, not the carved val/test split: `dataset.split_seed` fixes that
for every seed unless `dataset.resample_splits=true` draws it with the seed (logged as
`data.split_seed`). Two groups that share a seed share that order (and split), so the fair
comparison is paired over shared seeds: a paired t-test on the per-seed differences, which
removes the part of the noise both groups see. With a fixed test split the seeds say nothing of
which images landed in test: `wilson` gives the interval that the test set's size alone allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean

from scipy import stats as _scipy

CONFIDENCE = 0.95
EPS = 1e-12  # accuracies are ratios of counts: differences below this are float rounding
TIE = 1e-9  # means closer than this are equal: a tie, decided by cost, never by rounding


def tied(a: float, b: float) -> bool:
    return abs(a - b) <= TIE


def at_least(a: float, b: float) -> bool:
    """a >= b, up to rounding: 0.04 is exactly 1 point below 0.05."""
    return a >= b - TIE


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
    detectable: float | None = None  # the smallest mean gap this test calls real at these seeds

    def indistinguishable(self, alpha: float) -> bool | None:
        return None if self.p is None else self.p >= alpha


def _per_seed(values: dict[int, list[float]]) -> dict[int, float]:
    """One value per known seed: runs without a logged seed are never paired."""
    return {seed: fmean(v) for seed, v in values.items() if v and seed is not None}


def _t(confidence: float, df: float) -> float:
    return float(_scipy.t.ppf(0.5 + confidence / 2, df=df))


def _sd(xs: list[float]) -> float:
    m = fmean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def wilson(correct: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion `correct`/`n`."""
    ci = _scipy.binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def compare(best: dict[int, list[float]], other: dict[int, list[float]],
            confidence: float = CONFIDENCE) -> Comparison:
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
            return Comparison("paired t-test", len(shared), 1.0 if abs(fmean(diffs)) <= EPS else 0.0, 0.0)
        p = _scipy.ttest_rel([a[s] for s in shared], [b[s] for s in shared]).pvalue
        gap = _t(confidence, len(shared) - 1) * _sd(diffs) / math.sqrt(len(shared))
        return Comparison("paired t-test", len(shared), float(p), gap)
    xa = [v for vs in best.values() for v in vs]
    xb = [v for vs in other.values() for v in vs]
    if len(xa) >= 2 and len(xb) >= 2:
        if max(xa) - min(xa) <= EPS and max(xb) - min(xb) <= EPS:
            same = abs(fmean(xa) - fmean(xb)) <= EPS
            return Comparison("Welch t-test", min(len(xa), len(xb)), 1.0 if same else 0.0, 0.0)
        p = _scipy.ttest_ind(xa, xb, equal_var=False).pvalue
        va, vb = _sd(xa) ** 2 / len(xa), _sd(xb) ** 2 / len(xb)
        df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))  # Welch-Satterthwaite
        gap = _t(confidence, df) * math.sqrt(va + vb)
        return Comparison("Welch t-test", min(len(xa), len(xb)), float(p), gap)
    return Comparison("no test: fewer than 2 seeds", min(len(xa), len(xb)), None)
