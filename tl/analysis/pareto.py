"""Accuracy against cost: which choices no other choice beats on both.

A point is on the Pareto front when no other point is at least as accurate and at least as
cheap, and strictly better in one of the two. Accuracies within `stats.TIE` are equal (float
rounding decides nothing). Equal points are all on the front.
"""

from __future__ import annotations

import math

from tl.analysis.stats import TIE


def _dominates(j: tuple[float, float], i: tuple[float, float]) -> bool:
    (cj, aj), (ci, ai) = j, i
    return cj <= ci and aj >= ai - TIE and (cj < ci or aj > ai + TIE)


def front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the non-dominated `(cost, accuracy)` points; points with a NaN are never on it."""
    ok = [i for i, (c, a) in enumerate(points) if not (math.isnan(c) or math.isnan(a))]
    return {i for i in ok if not any(_dominates(points[j], points[i]) for j in ok if j != i)}
