"""Accuracy against cost: which choices no other choice beats on both.

A point is on the Pareto front when no other point is at least as accurate and at least as
cheap, and strictly better in one of the two. Equal points are all on the front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the non-dominated `(cost, accuracy)` points; points with a NaN are never on it."""
    ok = [i for i, (c, a) in enumerate(points) if not (math.isnan(c) or math.isnan(a))]
    out = set()
    for i in ok:
        ci, ai = points[i]
        if not any(points[j][0] <= ci and points[j][1] >= ai and points[j] != points[i] for j in ok):
            out.add(i)
    return out


@dataclass
class Point:
    label: str
    cost: float
    acc: float
    low: float | None = None  # the accuracy's interval, where known
    high: float | None = None
    on_front: bool = False
    best: bool = False


def plot(panels: dict[str, tuple[list[Point], str, str]]):
    """One panel per dataset: accuracy (with its interval) against cost, the front joined.
    `panels`: title -> (points, accuracy label, cost label)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    n = max(len(panels), 1)
    fig = Figure(figsize=(11 * n, 5), layout="constrained")
    for ax, (title, (points, acc_label, cost_label)) in zip(fig.subplots(1, n, squeeze=False)[0], panels.items()):
        costs = [p.cost for p in points if p.cost > 0]
        if costs and max(costs) / min(costs) > 20:  # a freeze run and a finetune run differ ~100x
            ax.set_xscale("log")
        # A legend entry per point, not labels beside them: close points' labels overlap.
        for i, p in enumerate(points):
            yerr = None if p.low is None else [[p.acc - p.low], [p.high - p.acc]]
            tags = [t for t, on in (("best", p.best), ("Pareto front", p.on_front)) if on]
            ax.errorbar([p.cost], [p.acc], yerr=yerr, fmt="*" if p.best else "o", capsize=3,
                        color=f"C{i % 10}", markersize=12 if p.best else 7,
                        markeredgecolor="black" if p.on_front else None, markeredgewidth=1.2,
                        label=p.label + (f" ({', '.join(tags)})" if tags else ""))
        line = sorted((p.cost, p.acc) for p in points if p.on_front)
        if line:
            ax.step(*zip(*line), where="post", color="black", alpha=0.4, linestyle="--",
                    label="Pareto front: no other both more accurate and cheaper")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, borderaxespad=0)
        ax.margins(x=0.1, y=0.08)
        ax.set_xlabel(cost_label)
        ax.set_ylabel(acc_label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    return fig
