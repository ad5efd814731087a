"""The answer of a sweep in a few lines, per dataset: the best choice with its interval, what
cannot be told apart from it (and, with few seeds, what the test could have told), the cheapest
choice nearly as good, which noise the intervals cover, and every caveat that limits it."""

from __future__ import annotations

from tl.analysis import stats
from tl.analysis.groups import Dataset, Group, failure

SEEDS_HINT = "trainer.seed=0,1,2"
MORE_SEEDS_HINT = "trainer.seed=0,1,2,3,4"
FEW_SEEDS = 3  # below this many paired seeds a t-test has one degree of freedom or none


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


def _n1(ds: Dataset, g: Group) -> str:
    """A one-seed group beside replicated ones: said where it is recommended."""
    several = any(o.acc.n >= 2 for o in ds.groups)
    return " (n=1: one run, no interval)" if g.acc.n < 2 and several else ""


def _cheapest(ds: Dataset, within: float) -> str | None:
    best = ds.best
    if ds.cost_key is None:
        return None
    near = [g for g in ds.groups if stats.at_least(g.acc.mean, best.acc.mean - within / 100)]
    cheap = min(near, key=lambda g: (g.cost, -g.acc.mean))
    head = f"Cheapest within {within:g} point{'s' if within != 1 else ''} of the best"
    if cheap is not best and cheap.cost < best.cost:
        return f"{head}: {cheap.label}, {ds.metric} {cheap.acc.mean:.3f}{_n1(ds, cheap)}, {_saving(ds, cheap)}."
    line = f"{head}: the best itself ({secs(best.cost)} {ds.cost})."
    cheaper = [g for g in ds.groups if g.on_front and g.cost < best.cost]
    if cheaper:  # the trade on offer: the cheapest choice that nothing beats on both
        g = min(cheaper, key=lambda g: g.cost)
        line += (f" Cheapest on the Pareto front: {g.label}, {ds.metric} {g.acc.mean:.3f}{_n1(ds, g)} "
                 f"({100 * (g.acc.mean - best.acc.mean):+.1f} points), {_saving(ds, g)}.")
    return line


def _saving(ds: Dataset, g: Group) -> str:
    best = ds.best
    ratio = best.cost / g.cost if g.cost > 0 else float("inf")
    hits = " with cached features, their backbone pass counted" if g.cache_hits else ""
    return f"{_times(ratio)} less time{hits} ({secs(g.cost)} vs {secs(best.cost)} {ds.cost})"


def _same(g: Group, best: Group) -> str:
    c = g.vs_best
    text = f"{g.label} (p={c.p:.3f}"
    if c.n < FEW_SEEDS and c.detectable:
        text += (f"; at {c.n} seeds this test detects only gaps above {100 * c.detectable:.1f} points, "
                 f"this one is {100 * (best.acc.mean - g.acc.mean):.1f}: add seeds, e.g. {MORE_SEEDS_HINT}")
    return text + ")"


def _tests(ds: Dataset) -> list[str]:
    best, others = ds.best, ds.groups[1:]
    if not others:
        return ["It is the only configuration that finished on this dataset: nothing to compare with."]
    if best.acc.n < 2 and all(g.acc.n < 2 for g in others):
        return [f"One seed per configuration: the intervals are unknown and no difference can be told "
                f"from noise. Add {SEEDS_HINT} to the sweep for {ds.confidence:.0%} intervals and a test "
                "of which differences are real."]
    out = []
    same = [g for g in others if g.indistinguishable]
    unknown = [g for g in others if g.indistinguishable is None]
    tests = sorted({g.vs_best.method for g in others if g.vs_best.p is not None})
    if tests:
        how = f"{' / '.join(tests)} against the best, p >= {1 - ds.confidence:.2f}"
        named = ", ".join(_same(g, best) for g in same) if same else "none"
        out.append(f"Indistinguishable from it ({how}): {named}.")
    if unknown and best.acc.n < 2:
        out.append("Not testable against a best with one seed: " + ", ".join(g.label for g in unknown) + ".")
    elif unknown:
        out.append("Not testable, fewer than 2 seeds: " + ", ".join(g.label for g in unknown)
                   + f" (add {SEEDS_HINT}).")
    return out


def noise(ds: Dataset) -> str | None:
    """Which noise the best's interval covers, and, on a fixed test split of known size, the
    interval that split's size alone allows (Wilson, on the best's mean correct count)."""
    best = ds.best
    split = "test" if ds.metric_key == "test_acc" else "val"
    if best.resampled:
        return (f"The intervals cover training and split noise: dataset.split_seed varied with the seed, "
                f"so each seed drew its own {split} images.")
    if all(r.split_seed is None for r in best.rows):
        return None  # runs logged before the split settings: nothing known to say
    n = best.test_images if split == "test" else None
    if not n:
        return (f"The intervals cover training noise only, on one fixed {split} split "
                "(dataset.split_seed is the same for every seed).")
    correct = round(best.acc.mean * n)
    low, high = stats.wilson(correct, n, ds.confidence)
    return (f"The intervals cover training noise only, on one fixed test split of {n} images (one image is "
            f"{100 / n:.1f} points): that split alone allows {ds.metric} {low:.3f} to {high:.3f} for the best "
            f"(Wilson {ds.confidence:.0%} interval of {correct}/{n} correct). More seeds do not narrow that: "
            "more test images, or splits resampled with the seed (dataset.split_seed=${trainer.seed}), do.")


def _values(rows, key: str) -> str:
    values = list(dict.fromkeys(getattr(r, key) for r in rows if getattr(r, key) is not None))
    return "/".join(str(v) for v in values)


def recipe(g: Group) -> str:
    """At which learning rate (weight decay where not 0) and schedule length a group ran."""
    lr, wd, epochs = _values(g.rows, "lr"), _values(g.rows, "weight_decay"), _values(g.rows, "epochs")
    parts = [f"lr={lr}" if lr else "", f"wd={wd}" if wd and any(float(v) for v in wd.split("/")) else "",
             f"{epochs} epochs" if epochs else ""]
    return ", ".join(p for p in parts if p)


def recipes(ds: Dataset) -> str | None:
    """The recipe each strategy ran at and whether it was tuned: strategies swept at one shared
    learning rate compare recipes, not strategies; a tl answer's finalists were each tuned."""
    if ds.groups and all(r.tuned for g in ds.groups for r in g.rows):
        return ("Recipes as tl answer chose them, each strategy's own: "
                + "; ".join(f"{g.label} at {recipe(g)} ({g.rows[0].tuned})" for g in ds.groups) + ".")
    if len({g.strategy for g in ds.groups}) < 2:
        return None
    lrs = {r.lr for g in ds.groups for r in g.rows}
    if lrs == {None}:
        return None  # runs logged without their optimizer: nothing to say of their recipes
    if len(lrs) == 1:
        return (f"Strategies share optimizer.lr={lrs.pop()}: their comparison is a comparison of recipes (each "
                "strategy at that one learning rate, not at its best); sweep optimizer.lr per strategy to compare "
                "the strategies themselves.")
    best = [next(g for g in ds.groups if g.strategy == s) for s in dict.fromkeys(g.strategy for g in ds.groups)]
    return ("Recipes as swept, not tuned per strategy (each strategy's best group): "
            + "; ".join(f"{g.label} at {recipe(g)}" for g in best)
            + ". tl answer tunes each strategy's rate on val before comparing.")


def _failed(ds: Dataset) -> str | None:
    if not ds.failed:
        return None
    return (f"Not counted (failed, or no usable {ds.metric}): "
            + "; ".join(f"{r.model} + {r.strategy}" + (f" seed {r.seed}" if r.seed is not None else "")
                        + f" ({failure(r)[:200]})" for r in ds.failed) + ".")


def lines(ds: Dataset, within: float = 1.0) -> list[str]:
    best = ds.best
    if best is None:
        return [f"No run on {ds.label} finished with a usable {ds.metric}.", *filter(None, [_failed(ds)])]
    out = [f"Best on {ds.label}: {best.label}, {_acc(ds, best)}."]
    if best.acc.n < 2 and any(g.acc.n >= 2 for g in ds.groups):
        out.append("Caveat: the best has one seed (n=1; its other seeds failed or did not run): its mean is "
                   "one run, with no interval, and it cannot be tested against the groups with more seeds.")
    out += _tests(ds)
    out += filter(None, [_cheapest(ds, within), noise(ds), recipes(ds), _failed(ds)])
    out += [f"Error: {e}." for e in ds.errors]
    out += [f"Note: {n}." for n in ds.notes]
    return out


def markdown(title: str, datasets: dict[str, Dataset], within: float = 1.0) -> str:
    out = [f"# Verdict: {title}", ""]
    for ds in datasets.values():
        out += [f"## {ds.label}", "", *(line + "  " for line in lines(ds, within)), ""]
    return "\n".join(out)
