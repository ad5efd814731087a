"""Everything `tl compare` shows, drawn from the analysed sweep: the run table, the seed-group
tables, the backbone x strategy matrices, markdown and CSV, and every figure (val curves,
matrix, Pareto front), all in one plotting style: matplotlib's `Figure`, never pyplot (no global
backend or figure state). `tl rank`'s table, markdown, CSV and chart are drawn here too (its
scores: `tl.training.ranking.Score`, read by attribute).

One meaning per marker everywhere: `*` marks the best group of a dataset (in the run table, its
runs; in the matrix, its cell), `=` a group indistinguishable from it, `!` a group whose runs
repeat a seed.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

from tl.analysis import groups
from tl.analysis.groups import Dataset
from tl.analysis.verdict import secs
from tl.tracking.runs import Row

STRATEGY_ORDER = ("finetune", "partial_freeze", "freeze")
LINE_STYLES = ("-", "--", ":", "-.")
COLUMNS = ["", "model", "strategy", "dataset", "test acc", "best val acc", "best epoch", "final val loss",
           "train s", "total s", "feature cache", "trainable / total params", "run"]
RIGHT = {"test acc", "best val acc", "best epoch", "final val loss", "train s", "total s",
         "trainable / total params"}
RUN_LEGEND = ("* the runs of each dataset's best group (the group table's *), ranked by test acc where "
              "every run has a test split, else best val acc")


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def metric(r: Row, key: str, spec: str) -> str:
    """A metric's cell: the NaN or inf a run logged shown as such, not as a missing value."""
    return str(r.nonfinite[key]) if key in r.nonfinite else fmt(getattr(r, key), spec)


def _mark(r: Row, best: set[str]) -> str:
    if r.run_id in best:
        return "*"
    if r.status != "FINISHED":
        return r.status
    if r.error:
        return "NaN" if any(x in r.error.lower() for x in ("nan", "inf")) else "no acc"
    return ""


def _cache(r: Row) -> str:
    if r.feature_cache == "hit":
        return "hit" + (f", +{secs(r.feature_pass_seconds)} s pass" if r.feature_pass_seconds is not None else "")
    return r.feature_cache or ""


def table(rows: list[Row], datasets: dict[str, Dataset]) -> tuple[list[str], list[list[str]]]:
    best = groups.best_runs(datasets)
    hidden = {"test acc": all(r.test_acc is None for r in rows),
              "total s": all(r.total_seconds is None for r in rows),
              "feature cache": not any(r.feature_cache == "hit" for r in rows)}
    header = [h for h in COLUMNS if not hidden.get(h)]
    if any(r.varied for r in rows):
        header.insert(4, "overrides")
    body = []
    for r in rows:
        cell = {"": _mark(r, best), "model": r.model, "strategy": r.strategy, "dataset": r.dataset,
                "overrides": r.varied, "test acc": metric(r, "test_acc", ".4f"),
                "best val acc": metric(r, "best_val_acc", ".4f"), "best epoch": fmt(r.best_epoch, "d"),
                "final val loss": fmt(r.final_val_loss, ".4f"), "train s": fmt(r.train_seconds, ".1f"),
                "total s": metric(r, "total_seconds", ".1f"), "feature cache": _cache(r),
                "trainable / total params": f"{fmt(r.trainable, ',')} / {fmt(r.total, ',')}",
                "run": r.run_id}
        body.append([cell[h] for h in header])
    return header, body


def _seeds(g: groups.Group) -> str:
    return ",".join("-" if s is None else str(s) for s in sorted(g.seeds, key=lambda s: (s is None, s or 0)))


def group_table(ds: Dataset) -> tuple[list[str], list[list[str]]]:
    """One row per seed group: `*` the best, `=` indistinguishable from it, `!` a seed repeated,
    `front` on the Pareto front of accuracy against cost."""
    header = ["", "model", "strategy", "n", "mean", "± CI", "p vs best", "cost s", "pareto", "seeds"]
    if any(g.varied for g in ds.groups):
        header.insert(3, "overrides")
    body = []
    for g in ds.groups:
        mark = "*" if g.best else ("=" if g.indistinguishable else "")
        mark += "!" if g.duplicate_seeds else ""
        p = "" if g.best else ("?" if g.vs_best.p is None else f"{g.vs_best.p:.3f}")
        cost = "-" if g.cost is None else secs(g.cost) + (" (cache hit)" if g.cache_hits else "")
        cell = {"": mark, "model": g.model, "strategy": g.strategy, "overrides": g.varied,
                "n": str(g.acc.n), "mean": f"{g.acc.mean:.4f}", "± CI": fmt(g.acc.half_width, ".4f"),
                "p vs best": p, "cost s": cost, "pareto": "front" if g.on_front else "", "seeds": _seeds(g)}
        body.append([cell[h] for h in header])
    header = [{"mean": ds.metric, "± CI": f"± {ds.confidence:.0%} CI", "cost s": ds.cost}.get(h, h)
              for h in header]
    return header, body


def group_legend(ds: Dataset, md: bool = False) -> str:
    alpha = 1 - ds.confidence
    q = (lambda s: f"`{s}`") if md else (lambda s: s)
    text = (f"{q('*')} the best group (highest mean; ties within 1e-9 go to the cheaper); {q('=')} "
            f"indistinguishable from the best (paired t-test over shared seeds, else Welch, p >= {alpha:.2f}); "
            f"{q('?')} fewer than 2 seeds, no test; front: no other group both more accurate and cheaper")
    if any(g.duplicate_seeds for g in ds.groups):
        text += f"; {q('!')} a seed ran more than once in the group (counted once: see the verdict's error)"
    if any(g.cache_hits for g in ds.groups):
        text += "; cost of a cache hit: the backbone pass it reused added back, as if run alone"
    return text


def group_right(ds: Dataset) -> set[str]:
    return {"n", ds.metric, f"± {ds.confidence:.0%} CI", "p vs best", ds.cost}


@dataclass
class Matrix:
    models: list[str]  # best first
    strategies: list[str]
    cells: dict[tuple[str, str], float]  # the mean of each pair's best group
    what: str  # the title: what a cell holds
    best: tuple[str, str]


def matrices(datasets: dict[str, Dataset]) -> dict[str, Matrix]:
    """Per dataset: each backbone x strategy pair's best group (by mean; several groups per pair
    when another key was swept), its mean metric, and a title saying so."""
    out = {}
    for ds in datasets.values():
        if not ds.groups:
            continue
        cells: dict[tuple[str, str], float] = {}
        for g in ds.groups:  # ranked: the first of a pair is its best
            cells.setdefault((g.model, g.strategy), g.acc.mean)
        models = list(dict.fromkeys(g.model for g in ds.groups))
        found = {g.strategy for g in ds.groups}
        strategies = [s for s in STRATEGY_ORDER if s in found] + sorted(found - set(STRATEGY_ORDER))
        what = [("mean over seeds" if max(g.acc.n for g in ds.groups) > 1 else "")]
        swept = sorted({o.split("=", 1)[0] for g in ds.groups for o in g.varied.split()})
        if len(ds.groups) > len(cells):
            what.append(f"each pair's best over {', '.join(swept)}")
        detail = "; ".join(x for x in what if x)
        title = ds.metric[0].upper() + ds.metric[1:] + (f" ({detail})" if detail else "")
        out[ds.label] = Matrix(models, strategies, cells, title, (ds.best.model, ds.best.strategy))
    return out


def aligned(header: list[str], body: list[list[str]], right: set[str]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(header, *body)]

    def line(cells):
        return "  ".join(c.rjust(w) if h in right else c.ljust(w)
                         for c, w, h in zip(cells, widths, header)).rstrip()

    return [line(header), *map(line, body)]


def matrix_lines(mats: dict[str, Matrix]) -> list[str]:
    lines = []
    for ds, m in mats.items():
        body = [[b, *(fmt(m.cells.get((b, s)), ".4f") + ("*" if (b, s) == m.best else " ")
                      for s in m.strategies)] for b in m.models]
        lines += ["", f"{m.what}, backbone x strategy ({ds}):"]
        header = ["", *(f"{s} " for s in m.strategies)]  # the space stands over the best mark
        lines += ["  " + x for x in aligned(header, body, set(header[1:]))]
    return lines


def md_table(header, body, right) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if h in right else "---" for h in header) + "|"]
    return out + ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]


def markdown(title: str, parent_id: str, rows: list[Row], datasets: dict[str, Dataset], verdicts) -> str:
    """table.md: the runs, each dataset's groups and verdict, and the matrices. `verdicts`:
    dataset key -> verdict lines."""
    header, body = table(rows, datasets)
    out = [f"# tl compare: {title}", "",
           f"Parent run `{parent_id}`; `*` marks the runs of each dataset's best group.", ""]
    out += md_table(header, body, RIGHT)
    for key, ds in datasets.items():
        if not ds.groups:
            continue
        out += ["", f"## Seed groups ({ds.label})", ""]
        out += md_table(*group_table(ds), group_right(ds))
        out += ["", group_legend(ds, md=True), "", "**Verdict.** " + " ".join(verdicts[key])]
    for ds, m in matrices(datasets).items():
        out += ["", f"## {m.what}, backbone x strategy ({ds})", "",
                "| backbone | " + " | ".join(m.strategies) + " |", "|---|" + "---:|" * len(m.strategies)]
        out += [f"| {b} | " + " | ".join(fmt(m.cells.get((b, s)), ".4f") + ("`*`" if (b, s) == m.best else "")
                                         for s in m.strategies) + " |" for b in m.models]
    return "\n".join(out) + "\n"


def csv_text(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run_id", "run_name", "status", "model", "strategy", "dataset", "data_key", "overrides",
                "seed", "test_acc", "best_val_acc", "best_epoch", "final_val_loss", "train_seconds",
                "total_seconds", "params_trainable", "params_total", "backbone", "feature_cache",
                "feature_pass_seconds", "cost_alone_seconds", "error"])
    for r in rows:
        w.writerow([r.run_id, r.run_name, r.status, r.model, r.strategy, r.dataset, r.data_key, r.varied,
                    *("" if v is None else v for v in (r.seed, r.test_acc, r.best_val_acc, r.best_epoch,
                                                      r.final_val_loss, r.train_seconds, r.total_seconds,
                                                      r.trainable, r.total, r.backbone, r.feature_cache,
                                                      r.feature_pass_seconds, r.cost_alone, r.error))])
    return buf.getvalue()


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # here, not at the top: matplotlib costs start-up time

    return Figure(figsize=(width, height), layout="constrained")


def plot_curves(rows: list[Row]):
    """Val accuracy and loss per epoch of every run: colour per model, line style per strategy."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(15, 5)
    axes = fig.subplots(1, 2)
    colours = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(r.model for r in rows))}
    found = {r.strategy for r in rows}  # the same style for a strategy in every sweep
    order = [s for s in STRATEGY_ORDER if s in found] + sorted(found - set(STRATEGY_ORDER))
    styles = {s: LINE_STYLES[i % len(LINE_STYLES)] for i, s in enumerate(order)}
    several = len({r.dataset for r in rows}) > 1
    for ax, key, title in zip(axes, ("val_acc", "val_loss"), ("val accuracy", "val loss")):
        for r in rows:
            if r.curves.get(key):
                steps, values = zip(*r.curves[key])
                label = r.label + (f" / {r.dataset}" if several else "")
                ax.plot(steps, values, color=colours[r.model], linestyle=styles[r.strategy],
                        marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    return fig


def plot_matrix(mats: dict[str, Matrix]):
    n = max(len(mats), 1)
    width = max(4.5, 1.6 * max((len(m.strategies) for m in mats.values()), default=1) + 3)
    height = max(2.5, 0.5 * max((len(m.models) for m in mats.values()), default=1) + 1.5)
    fig = _figure(width * n, height)
    for ax, (ds, m) in zip(fig.subplots(1, n, squeeze=False)[0], mats.items()):
        grid = [[m.cells.get((b, s), math.nan) for s in m.strategies] for b in m.models]
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(m.strategies)), m.strategies)
        ax.set_yticks(range(len(m.models)), m.models)
        ax.set_title(f"{ds}: {m.what[0].lower() + m.what[1:]}")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                star = "*" if (m.models[i], m.strategies[j]) == m.best else ""
                ax.text(j, i, "-" if math.isnan(v) else f"{v:.3f}{star}", ha="center", va="center",
                        color="black" if v > 0.6 else "white")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def plot_pareto(datasets: dict[str, Dataset]):
    """One panel per dataset with a cost: accuracy (with its interval) against cost, the front
    joined; a legend entry per group (close points' labels would overlap)."""
    panels = [ds for ds in datasets.values() if ds.cost_key is not None and ds.groups]
    fig = _figure(11 * max(len(panels), 1), 5)
    for ax, ds in zip(fig.subplots(1, max(len(panels), 1), squeeze=False)[0], panels):
        costs = [g.cost for g in ds.groups if g.cost > 0]
        if costs and max(costs) / min(costs) > 20:  # a freeze run and a finetune run differ ~100x
            ax.set_xscale("log")
        for i, g in enumerate(ds.groups):
            yerr = None if g.acc.low is None else [[g.acc.mean - g.acc.low], [g.acc.high - g.acc.mean]]
            tags = [t for t, on in (("best", g.best), ("Pareto front", g.on_front), ("cache hit", g.cache_hits))
                    if on]
            ax.errorbar([g.cost], [g.acc.mean], yerr=yerr, fmt="*" if g.best else "o", capsize=3,
                        color=f"C{i % 10}", markersize=12 if g.best else 7,
                        markeredgecolor="black" if g.on_front else None, markeredgewidth=1.2,
                        label=g.label + (f" ({', '.join(tags)})" if tags else ""))
        line = sorted((g.cost, g.acc.mean) for g in ds.groups if g.on_front)
        if line:
            ax.step(*zip(*line), where="post", color="black", alpha=0.4, linestyle="--",
                    label="Pareto front: no other both more accurate and cheaper")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, borderaxespad=0)
        ax.margins(x=0.1, y=0.08)
        alone = "total seconds per run, as if alone" if ds.cost_key == "total_seconds" else "train seconds per run"
        ax.set_xlabel(alone)
        ax.set_ylabel(f"{ds.metric} (mean, {ds.confidence:.0%} CI)")
        ax.set_title(ds.label)
        ax.grid(alpha=0.3)
    return fig


def text(rows: list[Row], datasets: dict[str, Dataset], verdicts) -> list[str]:
    """What `tl compare` prints between its header line and the agreement with a ranking."""
    header, body = table(rows, datasets)
    out = aligned(header, body, RIGHT)
    finished = sum(r.status == "FINISHED" for r in rows)
    out.append(RUN_LEGEND + ("; runs not FINISHED are marked with their status, NaN or no acc: a "
                             "missing or non-finite metric" if finished < len(rows) or any(r.error for r in rows)
                             else ""))
    for ds in datasets.values():
        if not ds.groups:
            continue
        cost = f"; cost: {ds.cost}" + (", as if alone" if ds.cost_key == "total_seconds" else "") if ds.cost_key else ""
        out += ["", f"Seed groups on {ds.label}: {ds.metric}, mean and {ds.confidence:.0%} CI over seeds{cost}"]
        out += aligned(*group_table(ds), group_right(ds))
        out.append(group_legend(ds))
    out += matrix_lines(matrices(datasets))
    for key, ds in datasets.items():
        out += ["", f"Verdict ({ds.label}):", *("  " + line for line in verdicts[key])]
    return out


# `tl rank`: its scores (preset, label, pretrained, logme, knn_acc, seconds, feature_cache, error).

def rank_table(scores, knn_k: int) -> list[str]:
    """The ranking as aligned lines; `#` counts only the backbones that could be scored."""
    header = ["#", "preset", "model", "LogME", f"{knn_k}-NN val acc", "seconds", "features"]
    body, n = [], 0
    for s in scores:
        if s.logme is not None:
            n += 1
        body.append([str(n) if s.logme is not None else "-", s.preset, s.label, fmt(s.logme, ".4f"),
                     fmt(s.knn_acc, ".4f"), f"{s.seconds:.1f}", s.feature_cache or s.error])
    return aligned(header, body, {"#", "LogME", f"{knn_k}-NN val acc", "seconds"})


def rank_markdown(lines: list[str], command: str | None, data_id: str) -> str:
    return "\n".join([f"# tl rank on {data_id}", "", "```", *lines, "```", "",
                      *(["Top-k sweep:", "", "```", command, "```"] if command else [])]) + "\n"


def rank_csv(scores) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["preset", "model", "pretrained", "logme", "knn_acc", "seconds", "feature_cache", "error"])
    for s in scores:
        w.writerow([s.preset, s.model, s.pretrained, s.logme, s.knn_acc, round(s.seconds, 3), s.feature_cache, s.error])
    return buf.getvalue()


def rank_figure(scores, knn_k: int):
    """LogME and k-NN accuracy per scored backbone, best on top; red bars have no pretraining."""
    ok = [s for s in scores if s.logme is not None]
    fig = _figure(10, 0.5 * len(ok) + 1.8)
    axes = fig.subplots(1, 2, sharey=True)
    labels = [s.label for s in ok][::-1]
    colours = ["#4c72b0" if s.pretrained else "#c44e52" for s in ok][::-1]
    for ax, values, title in ((axes[0], [s.logme for s in ok][::-1], "LogME (higher: better)"),
                              (axes[1], [s.knn_acc for s in ok][::-1], f"{knn_k}-NN val accuracy")):
        ax.barh(labels, values, color=colours)
        ax.set_title(title)
    fig.suptitle("tl rank: red bars have no pretraining")
    return fig
