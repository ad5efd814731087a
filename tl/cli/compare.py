"""`tl compare`: a sweep's runs side by side, and the answer they give.

Per dataset identity (never two datasets pooled): the runs ranked, their seed groups with mean,
confidence interval and a test against the best (tl/groups.py, tl/stats.py), accuracy against
cost with the Pareto front (tl/pareto.py), a backbone x strategy matrix, the val curves of every
run overlaid, and the verdict (tl/verdict.py): printed, written as files, and logged under
`compare/` of the sweep's parent run so the MLflow UI shows them where the sweep is.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tl.analysis import groups, stats, verdict
from tl.errors import TLError
from tl.sweeps import sweep
from tl.tracking import readback, store

ARTIFACT_DIR = "compare"
STRATEGY_ORDER = ("finetune", "partial_freeze", "freeze")
LINE_STYLES = ("-", "--", ":", "-.")
SPLIT_KEYS = {"model", "strategy", "dataset", "dataset.root"}  # the sweep's axes, shown in their own columns


@dataclass
class Row:
    run_id: str
    run_name: str
    status: str
    model: str
    strategy: str
    dataset: str
    best_val_acc: float | None
    best_epoch: int | None
    final_val_loss: float | None
    train_seconds: float | None
    trainable: int | None
    total: int | None
    varied: str = ""  # other overrides that differ between the sweep's jobs (e.g. optimizer.lr)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    data_key: str = ""  # the dataset's identity (tag tl.data_id, else name + root); default: dataset
    seed: int | None = None
    test_acc: float | None = None
    total_seconds: float | None = None

    def __post_init__(self):
        self.data_key = self.data_key or self.dataset

    @property
    def label(self) -> str:
        return " / ".join(x for x in (self.model, self.strategy, self.varied) if x)


def _int(v) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _varied(runs) -> dict[str, str]:
    """Per run, the overrides other than the sweep's axes whose values differ between runs."""
    parsed = {}
    for r in runs:
        pairs = (o.split("=", 1) for o in r.data.tags.get("tl.overrides", "").split() if "=" in o)
        parsed[r.info.run_id] = {k.lstrip("+~"): v for k, v in pairs}
    keys = {k for d in parsed.values() for k in d} - SPLIT_KEYS
    differing = sorted(k for k in keys if len({d.get(k) for d in parsed.values()}) > 1)
    return {rid: " ".join(f"{k}={d.get(k, '-')}" for k in differing) for rid, d in parsed.items()}


def model_label(tags: dict, params: dict) -> str:
    """The backbone, with "(scratch)" when it did not start from pretrained weights (tag
    tl.pretrained; runs logged before it have only the param model.pretrained)."""
    pretrained = tags.get("tl.pretrained", params.get("model.pretrained", "true"))
    scratch = str(pretrained).strip().lower() in ("false", "0", "no")
    return tags.get("tl.model", "?") + (" (scratch)" if scratch else "")


def data_identity(runs) -> dict[str, tuple[str, str]]:
    """Per run, (key, label) of the dataset it saw: the tag tl.data_id where the run logged it,
    else the dataset name plus its `dataset.root`, labelled by the name alone where that is
    unambiguous in the sweep, else by name and root folder."""
    keys = {}
    for r in runs:
        t, p = r.data.tags, r.data.params
        if t.get("tl.data_id"):
            keys[r.info.run_id] = (t["tl.data_id"], None, None)
        else:
            name, root = t.get("tl.dataset", "?"), p.get("dataset.root", "None")
            keys[r.info.run_id] = (f"{name}:{root}", name, root)
    roots_per_name: dict[str, set] = {}
    for _, name, root in keys.values():
        if name is not None:
            roots_per_name.setdefault(name, set()).add(root)
    out = {}
    for rid, (key, name, root) in keys.items():
        if name is None:
            label = key
        elif len(roots_per_name[name]) == 1:
            label = name
        else:
            folders = [Path(x).name for x in roots_per_name[name]]
            short = Path(root).name
            label = f"{name} ({short if folders.count(short) == 1 else root})"
        out[rid] = (key, label)
    return out


def collect(client, parent) -> list[Row]:
    """One row per child run of the sweep: per dataset, ranked by test acc where the runs have
    one, else best val acc (runs without one last)."""
    runs = sweep.children(client, sweep.Parent("", parent.info.experiment_id, parent.info.run_id))
    varied = _varied(runs)
    identity = data_identity(runs)
    rows = []
    for r in runs:
        m, p, t = r.data.metrics, r.data.params, r.data.tags
        curves = {k: readback.history(client, r.info.run_id, k) for k in ("val_acc", "val_loss")}
        data_key, data_label = identity[r.info.run_id]
        rows.append(Row(
            run_id=r.info.run_id, run_name=r.info.run_name or "", status=r.info.status,
            model=model_label(t, p), strategy=t.get("tl.strategy", "?"),
            dataset=data_label, best_val_acc=m.get("best_val_acc"),
            best_epoch=_int(m.get("best_epoch")),
            final_val_loss=curves["val_loss"][-1][1] if curves["val_loss"] else None,
            train_seconds=m.get("train_seconds"), trainable=_int(p.get("params.trainable")),
            total=_int(p.get("params.total")), varied=varied.get(r.info.run_id, ""), curves=curves,
            data_key=data_key, seed=_int(p.get("trainer.seed")), test_acc=m.get("test_acc"),
            total_seconds=m.get("total_seconds"),
        ))
    order = {k: i for i, k in enumerate(sorted({r.data_key for r in rows}))}
    by = _metric_per_dataset(rows)

    def score(r):
        return getattr(r, by[r.data_key])

    return sorted(rows, key=lambda r: (order[r.data_key], score(r) is None, -(score(r) or 0.0),
                                       r.final_val_loss if r.final_val_loss is not None else math.inf))


def _metric_per_dataset(rows: list[Row]) -> dict[str, str]:
    """The Row attribute each dataset's runs are ranked by: the one its groups are (tl/groups.py)."""
    out = {}
    for key in {r.data_key for r in rows}:
        done = [r for r in rows if r.data_key == key and r.status == "FINISHED" and r.best_val_acc is not None]
        out[key] = groups.choose_metric(done)[0] if done else "best_val_acc"
    return out


def _best(rows: list[Row]) -> set[str]:
    """The best finished run of each dataset (rows are ranked already)."""
    by, out = _metric_per_dataset(rows), {}
    for r in rows:
        if r.status == "FINISHED" and getattr(r, by[r.data_key]) is not None:
            out.setdefault(r.data_key, r.run_id)
    return set(out.values())


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


COLUMNS = ["", "model", "strategy", "dataset", "test acc", "best val acc", "best epoch", "final val loss",
           "train s", "total s", "trainable / total params", "run"]
RIGHT = {"test acc", "best val acc", "best epoch", "final val loss", "train s", "total s",
         "trainable / total params"}


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    best = _best(rows)
    header = [h for h in COLUMNS if not (h == "test acc" and all(r.test_acc is None for r in rows)
                                         or h == "total s" and all(r.total_seconds is None for r in rows))]
    if any(r.varied for r in rows):
        header.insert(4, "overrides")
    body = []
    for r in rows:
        mark = "*" if r.run_id in best else ("" if r.status == "FINISHED" else r.status)
        cell = {"": mark, "model": r.model, "strategy": r.strategy, "dataset": r.dataset,
                "overrides": r.varied, "test acc": _fmt(r.test_acc, ".4f"),
                "best val acc": _fmt(r.best_val_acc, ".4f"), "best epoch": _fmt(r.best_epoch, "d"),
                "final val loss": _fmt(r.final_val_loss, ".4f"), "train s": _fmt(r.train_seconds, ".1f"),
                "total s": _fmt(r.total_seconds, ".1f"),
                "trainable / total params": f"{_fmt(r.trainable, ',')} / {_fmt(r.total, ',')}",
                "run": r.run_id}
        body.append([cell[h] for h in header])
    return header, body


def group_table(ds: groups.Dataset) -> tuple[list[str], list[list[str]]]:
    """One row per seed group: `*` the best, `=` indistinguishable from it, `front` on the
    Pareto front of accuracy against cost."""
    header = ["", "model", "strategy", "n", "mean", "± CI", "p vs best", "cost s", "pareto", "seeds"]
    if any(g.varied for g in ds.groups):
        header.insert(3, "overrides")
    body = []
    for g in ds.groups:
        mark = "*" if g.best else ("=" if g.indistinguishable else "")
        p = "" if g.best else ("?" if g.vs_best.p is None else f"{g.vs_best.p:.3f}")
        seeds = ",".join("-" if s is None else str(s) for s in sorted(g.seeds, key=lambda s: (s is None, s)))
        cell = {"": mark, "model": g.model, "strategy": g.strategy, "overrides": g.varied,
                "n": str(g.acc.n), "mean": f"{g.acc.mean:.4f}", "± CI": _fmt(g.acc.half_width, ".4f"),
                "p vs best": p, "cost s": "-" if g.cost is None else verdict.secs(g.cost),
                "pareto": "front" if g.on_front else "", "seeds": seeds}
        body.append([cell[h] for h in header])
    header = [{"mean": ds.metric, "± CI": f"± {ds.confidence:.0%} CI", "cost s": ds.cost}.get(h, h)
              for h in header]
    return header, body


def group_legend(ds: groups.Dataset, md: bool = False) -> str:
    alpha = 1 - ds.confidence
    star, eq = ("`*`", "`=`") if md else ("*", "=")
    return (f"{star} the best group (highest mean); {eq} indistinguishable from the best (paired t-test "
            f"over shared seeds, else Welch, p >= {alpha:.2f}); {'`?`' if md else '?'} fewer than 2 seeds, "
            "no test; front: no other group both more accurate and cheaper")


def _group_right(ds: groups.Dataset) -> set[str]:
    return {"n", ds.metric, f"± {ds.confidence:.0%} CI", "p vs best", ds.cost}


def matrices(rows: list[Row], confidence: float = stats.CONFIDENCE):
    """Per dataset: models (best first), strategies, the mean metric of each pair's best group
    (several groups per pair when another key was swept), and what the metric is."""
    out = {}
    for ds in groups.analyse(rows, confidence).values():
        cells: dict[tuple[str, str], float] = {}
        for g in ds.groups:
            cells[(g.model, g.strategy)] = max(cells.get((g.model, g.strategy), -1.0), g.acc.mean)
        models = list(dict.fromkeys(g.model for g in ds.groups))
        found = {g.strategy for g in ds.groups}
        strategies = [s for s in STRATEGY_ORDER if s in found] + sorted(found - set(STRATEGY_ORDER))
        seeds = max(g.acc.n for g in ds.groups)
        what = ds.metric[0].upper() + ds.metric[1:] + (" (mean over seeds)" if seeds > 1 else "")
        out[ds.label] = (models, strategies, cells, what)
    return out


def _aligned(header: list[str], body: list[list[str]], right: set[str]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(header, *body)]

    def line(cells):
        return "  ".join(c.rjust(w) if h in right else c.ljust(w)
                         for c, w, h in zip(cells, widths, header)).rstrip()

    return [line(header), *map(line, body)]


def matrix_lines(mats) -> list[str]:
    lines = []
    for ds, (models, strategies, cells, what) in mats.items():
        top = max(cells.values())
        body = [[m, *(_fmt(cells.get((m, s)), ".4f") + ("*" if cells.get((m, s)) == top else " ")
                      for s in strategies)] for m in models]
        lines += ["", f"{what}, backbone x strategy ({ds}):"]
        header = ["", *(f"{s} " for s in strategies)]  # the space stands over the best mark
        lines += ["  " + x for x in _aligned(header, body, set(header[1:]))]
    return lines


def _md_table(header, body, right) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if h in right else "---" for h in header) + "|"]
    return out + ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]


def markdown(parent, rows: list[Row], mats, datasets=None, within: float = 1.0) -> str:
    header, body = table(rows)
    out = [f"# tl compare: {parent.info.run_name or parent.info.run_id}", "",
           f"Parent run `{parent.info.run_id}`; `*` marks the best run per dataset.", ""]
    out += _md_table(header, body, RIGHT)
    for ds in (datasets or {}).values():
        out += ["", f"## Seed groups ({ds.label})", ""]
        out += _md_table(*group_table(ds), _group_right(ds))
        out += ["", group_legend(ds, md=True), "", "**Verdict.** " + " ".join(verdict.lines(ds, within))]
    for ds, (models, strategies, cells, what) in mats.items():
        out += ["", f"## {what}, backbone x strategy ({ds})", "",
                "| backbone | " + " | ".join(strategies) + " |", "|---|" + "---:|" * len(strategies)]
        out += [f"| {m} | " + " | ".join(_fmt(cells.get((m, s)), ".4f") for s in strategies) + " |"
                for m in models]
    return "\n".join(out) + "\n"


def csv_text(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run_id", "run_name", "status", "model", "strategy", "dataset", "data_key", "overrides",
                "seed", "test_acc", "best_val_acc", "best_epoch", "final_val_loss", "train_seconds",
                "total_seconds", "params_trainable", "params_total"])
    for r in rows:
        w.writerow([r.run_id, r.run_name, r.status, r.model, r.strategy, r.dataset, r.data_key, r.varied,
                    *("" if v is None else v for v in (r.seed, r.test_acc, r.best_val_acc, r.best_epoch,
                                                      r.final_val_loss, r.train_seconds, r.total_seconds,
                                                      r.trainable, r.total))])
    return buf.getvalue()


def plot_curves(rows: list[Row]):
    """Val accuracy and loss per epoch of every run: colour per model, line style per strategy."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(15, 5), layout="constrained")
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


def plot_matrix(mats):
    from matplotlib.figure import Figure

    n = max(len(mats), 1)
    width = max(4.5, 1.6 * max((len(s) for _, s, _, _ in mats.values()), default=1) + 3)
    height = max(2.5, 0.5 * max((len(m) for m, _, _, _ in mats.values()), default=1) + 1.5)
    fig = Figure(figsize=(width * n, height), layout="constrained")
    for ax, (ds, (models, strategies, cells, what)) in zip(fig.subplots(1, n, squeeze=False)[0], mats.items()):
        grid = [[cells.get((m, s), math.nan) for s in strategies] for m in models]
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(strategies)), strategies)
        ax.set_yticks(range(len(models)), models)
        ax.set_title(f"{ds}: {what[0].lower() + what[1:]}")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, "-" if math.isnan(v) else f"{v:.3f}", ha="center", va="center",
                        color="black" if v > 0.6 else "white")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def write(folder: Path, parent, rows: list[Row], confidence: float = stats.CONFIDENCE,
          within: float = 1.0) -> list[Path]:
    mats = matrices(rows, confidence)
    datasets = groups.analyse(rows, confidence)
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "table.md", folder / "runs.csv", folder / "curves.png", folder / "matrix.png"]
    files[0].write_text(markdown(parent, rows, mats, datasets, within))
    files[1].write_text(csv_text(rows))
    plot_curves(rows).savefig(files[2], dpi=110)
    plot_matrix(mats).savefig(files[3], dpi=110)
    if any(ds.cost_key for ds in datasets.values()):
        files.append(folder / "pareto.png")
        groups.pareto_figure(datasets).savefig(files[-1], dpi=110)
    if datasets:
        files.append(folder / "verdict.md")
        files[-1].write_text(verdict.markdown(parent.info.run_name or parent.info.run_id, datasets, within))
    return files


def check_options(confidence: float, within: float) -> None:
    if not 0 < confidence < 1:  # also refuses nan
        raise TLError(f"--confidence {confidence} must lie strictly between 0 and 1, e.g. 0.95")
    if not within >= 0:
        raise TLError(f"--within {within} must be a number of accuracy points >= 0, e.g. 1 (= 0.01)")


def run(uri: str, experiment: str, which: str, out: str | None, confidence: float = stats.CONFIDENCE,
        within: float = 1.0) -> int:
    check_options(confidence, within)
    client = readback.open_client(uri)
    parent = readback.find_sweep(client, experiment, which, uri)
    rows = collect(client, parent)
    if not rows:
        raise TLError(f"sweep {parent.info.run_id} has no runs yet: its jobs create them as they start")
    finished = sum(r.status == "FINISHED" for r in rows)
    exp = client.get_experiment(parent.info.experiment_id)
    print(f"Sweep {parent.info.run_id} ({parent.info.run_name}) in experiment {exp.name!r}: "
          f"{len(rows)} runs, {finished} finished\n")
    header, body = table(rows)
    print("\n".join(_aligned(header, body, RIGHT)))
    print("* best run per dataset (by test acc where every run has a test split, else best val acc)"
          + ("; runs not FINISHED are marked with their status" if finished < len(rows) else ""))
    datasets = groups.analyse(rows, confidence)
    for ds in datasets.values():
        cost = f"; cost: {ds.cost}" if ds.cost_key else ""
        print(f"\nSeed groups on {ds.label}: {ds.metric}, mean and {ds.confidence:.0%} CI over seeds{cost}")
        gh, gb = group_table(ds)
        print("\n".join(_aligned(gh, gb, _group_right(ds))))
        print(group_legend(ds))
    print("\n".join(matrix_lines(matrices(rows, confidence))))
    for ds in datasets.values():
        print(f"\nVerdict ({ds.label}):")
        print("\n".join("  " + line for line in verdict.lines(ds, within)))

    with tempfile.TemporaryDirectory(prefix="tl-compare-") as tmp:
        folder = Path(out) if out else Path(tmp)
        files = write(folder, parent, rows, confidence, within)
        for f in files:
            client.log_artifact(parent.info.run_id, str(f), ARTIFACT_DIR)
    print(f"\nLogged to the sweep's parent run under {ARTIFACT_DIR}/: {', '.join(f.name for f in files)}"
          + (f" (also written to {out})" if out else ""))
    print(store.ui_hint(uri, parent.info.experiment_id, [r.run_id for r in rows]))
    from tl.cli import rank  # did a `tl rank` of the same data predict these results?

    held = rank.sweep_agreement(client, parent)
    if held:
        print("\n" + held)
    return 0
