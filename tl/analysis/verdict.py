"""The answer of a sweep in a few lines, per dataset: the best choice with its interval, what
cannot be told apart from it, and the cheapest choice nearly as good."""

from __future__ import annotations

from tl.analysis.groups import Dataset, Group

SEEDS_HINT = "trainer.seed=0,1,2"


def _acc(ds: Dataset, g: Group) -> str:
    n = f"{g.acc.n} seed{'s' if g.acc.n != 1 else ''}"
    if g.acc.half_width is None:
        return f"{ds.metric} {g.acc.mean:.3f} ({n})"
    return f"{ds.metric} {g.acc.mean:.3f} ± {g.acc.half_width:.3f} ({ds.confidence:.0%} CI, {n})"


def secs(x: float) -> str:
    """Seconds with the precision their size needs: a cached-features head trains in 0.03 s."""
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def _times(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def _cheapest(ds: Dataset, within: float) -> str | None:
    best = ds.best
    if ds.cost_key is None:
        return None
    near = [g for g in ds.groups if g.acc.mean >= best.acc.mean - within / 100]
    cheap = min(near, key=lambda g: (g.cost, -g.acc.mean))
    head = f"Cheapest within {within:g} point{'s' if within != 1 else ''} of the best"
    if cheap is not best and cheap.cost < best.cost:
        return f"{head}: {cheap.label}, {ds.metric} {cheap.acc.mean:.3f}, {_saving(ds, cheap)}."
    line = f"{head}: the best itself ({secs(best.cost)} {ds.cost})."
    cheaper = [g for g in ds.groups if g.on_front and g.cost < best.cost]
    if cheaper:  # the trade on offer: the cheapest choice that nothing beats on both
        g = min(cheaper, key=lambda g: g.cost)
        line += (f" Cheapest on the Pareto front: {g.label}, {ds.metric} {g.acc.mean:.3f} "
                 f"({100 * (g.acc.mean - best.acc.mean):+.1f} points), {_saving(ds, g)}.")
    return line


def _saving(ds: Dataset, g: Group) -> str:
    best = ds.best
    ratio = best.cost / g.cost if g.cost > 0 else float("inf")
    return f"{_times(ratio)} less time ({secs(g.cost)} vs {secs(best.cost)} {ds.cost})"


def lines(ds: Dataset, within: float = 1.0) -> list[str]:
    best = ds.best
    out = [f"Best on {ds.label}: {best.label}, {_acc(ds, best)}."]
    others = ds.groups[1:]
    if not others:
        out.append("It is the only configuration that finished on this dataset: nothing to compare with.")
    elif best.acc.n < 2 and all(g.acc.n < 2 for g in others):
        out.append(f"One seed per configuration: the intervals are unknown and no difference can be told "
                   f"from noise. Add {SEEDS_HINT} to the sweep for {ds.confidence:.0%} intervals and a test "
                   "of which differences are real.")
    else:
        same = [g for g in others if g.indistinguishable]
        unknown = [g for g in others if g.indistinguishable is None]
        tests = sorted({g.vs_best.method for g in others if g.vs_best.p is not None})
        if tests:
            how = f"{' / '.join(tests)} against the best, p >= {1 - ds.confidence:.2f}"
            out.append(f"Indistinguishable from it ({how}): "
                       + (", ".join(f"{g.label} (p={g.vs_best.p:.3f})" for g in same) if same else "none")
                       + ".")
        if unknown:
            out.append("Not testable, fewer than 2 seeds: " + ", ".join(g.label for g in unknown)
                       + f" (add {SEEDS_HINT}).")
    cheapest = _cheapest(ds, within)
    if cheapest:
        out.append(cheapest)
    out += [f"Note: {n}." for n in ds.notes]
    return out


def markdown(title: str, datasets: dict[str, Dataset], within: float = 1.0) -> str:
    out = [f"# Verdict: {title}", ""]
    for ds in datasets.values():
        out += [f"## {ds.label}", "", *(line + "  " for line in lines(ds, within)), ""]
    return "\n".join(out)
