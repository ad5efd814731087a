"""`tl compare`: a sweep's runs side by side.

A table ranked by best val accuracy, a backbone x strategy matrix, and val curves of every run
overlaid: printed, written as files, and logged under `compare/` of the sweep's parent run so
the MLflow UI shows them where the sweep is.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tl import store, sweep, tracking
from tl.errors import TLError

ARTIFACT_DIR = "compare"
STRATEGY_ORDER = ("finetune", "partial_freeze", "freeze")
LINE_STYLES = ("-", "--", ":", "-.")
SPLIT_KEYS = {"model", "strategy", "dataset"}  # the sweep's axes, shown in their own columns


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


def collect(client, parent) -> list[Row]:
    """One row per child run of the sweep, ranked by best val accuracy (runs without one last)."""
    runs = sweep.children(client, sweep.Parent("", parent.info.experiment_id, parent.info.run_id))
    varied = _varied(runs)
    rows = []
    for r in runs:
        m, p, t = r.data.metrics, r.data.params, r.data.tags
        curves = {k: store.history(client, r.info.run_id, k) for k in ("val_acc", "val_loss")}
        rows.append(Row(
            run_id=r.info.run_id, run_name=r.info.run_name or "", status=r.info.status,
            model=t.get("tl.model", "?"), strategy=t.get("tl.strategy", "?"),
            dataset=t.get("tl.dataset", "?"), best_val_acc=m.get("best_val_acc"),
            best_epoch=_int(m.get("best_epoch")),
            final_val_loss=curves["val_loss"][-1][1] if curves["val_loss"] else None,
            train_seconds=m.get("train_seconds"), trainable=_int(p.get("params.trainable")),
            total=_int(p.get("params.total")), varied=varied.get(r.info.run_id, ""), curves=curves,
        ))
    return sorted(rows, key=lambda r: (r.best_val_acc is None, -(r.best_val_acc or 0.0),
                                       r.final_val_loss if r.final_val_loss is not None else math.inf))


def _best(rows: list[Row]) -> Row | None:
    done = [r for r in rows if r.status == "FINISHED" and r.best_val_acc is not None]
    return done[0] if done else None  # rows are ranked already


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


COLUMNS = ["", "model", "strategy", "dataset", "best val acc", "best epoch", "final val loss",
           "train s", "trainable / total params", "run"]
RIGHT = {"best val acc", "best epoch", "final val loss", "train s", "trainable / total params"}


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    best = _best(rows)
    header = list(COLUMNS)
    if any(r.varied for r in rows):
        header.insert(4, "overrides")
    body = []
    for r in rows:
        mark = "*" if r is best else ("" if r.status == "FINISHED" else r.status)
        params = f"{_fmt(r.trainable, ',')} / {_fmt(r.total, ',')}"
        cells = [mark, r.model, r.strategy, r.dataset, _fmt(r.best_val_acc, ".4f"),
                 _fmt(r.best_epoch, "d"), _fmt(r.final_val_loss, ".4f"), _fmt(r.train_seconds, ".1f"),
                 params, r.run_id]
        if "overrides" in header:
            cells.insert(4, r.varied)
        body.append(cells)
    return header, body


def matrices(rows: list[Row]) -> dict[str, tuple[list[str], list[str], dict[tuple[str, str], float]]]:
    """Per dataset: models (best first), strategies, and the best val acc of each pair."""
    out = {}
    for ds in dict.fromkeys(r.dataset for r in rows):
        done = [r for r in rows if r.dataset == ds and r.best_val_acc is not None]
        cells: dict[tuple[str, str], float] = {}
        for r in done:  # several runs per pair (another swept key): the pair's best
            cells[(r.model, r.strategy)] = max(cells.get((r.model, r.strategy), -1.0), r.best_val_acc)
        models = list(dict.fromkeys(r.model for r in done))
        found = {r.strategy for r in done}
        strategies = [s for s in STRATEGY_ORDER if s in found] + sorted(found - set(STRATEGY_ORDER))
        if models:
            out[ds] = (models, strategies, cells)
    return out


def _aligned(header: list[str], body: list[list[str]], right: set[str]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(header, *body)]

    def line(cells):
        return "  ".join(c.rjust(w) if h in right else c.ljust(w)
                         for c, w, h in zip(cells, widths, header)).rstrip()

    return [line(header), *map(line, body)]


def matrix_lines(mats) -> list[str]:
    lines = []
    for ds, (models, strategies, cells) in mats.items():
        top = max(cells.values())
        body = [[m, *(_fmt(cells.get((m, s)), ".4f") + ("*" if cells.get((m, s)) == top else " ")
                      for s in strategies)] for m in models]
        lines += ["", f"Best val acc, backbone x strategy ({ds}):"]
        header = ["", *(f"{s} " for s in strategies)]  # the space stands over the best mark
        lines += ["  " + x for x in _aligned(header, body, set(header[1:]))]
    return lines


def markdown(parent, rows: list[Row], mats) -> str:
    header, body = table(rows)
    out = [f"# tl compare: {parent.info.run_name or parent.info.run_id}", "",
           f"Parent run `{parent.info.run_id}`; `*` marks the best val accuracy.", ""]
    out += ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if h in RIGHT else "---" for h in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
    for ds, (models, strategies, cells) in mats.items():
        out += ["", f"## Best val acc, backbone x strategy ({ds})", "",
                "| backbone | " + " | ".join(strategies) + " |", "|---|" + "---:|" * len(strategies)]
        out += [f"| {m} | " + " | ".join(_fmt(cells.get((m, s)), ".4f") for s in strategies) + " |"
                for m in models]
    return "\n".join(out) + "\n"


def csv_text(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run_id", "run_name", "status", "model", "strategy", "dataset", "overrides",
                "best_val_acc", "best_epoch", "final_val_loss", "train_seconds",
                "params_trainable", "params_total"])
    for r in rows:
        w.writerow([r.run_id, r.run_name, r.status, r.model, r.strategy, r.dataset, r.varied,
                    *("" if v is None else v for v in (r.best_val_acc, r.best_epoch, r.final_val_loss,
                                                      r.train_seconds, r.trainable, r.total))])
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
    width = max(4.5, 1.6 * max((len(s) for _, s, _ in mats.values()), default=1) + 3)
    height = max(2.5, 0.5 * max((len(m) for m, _, _ in mats.values()), default=1) + 1.5)
    fig = Figure(figsize=(width * n, height), layout="constrained")
    for ax, (ds, (models, strategies, cells)) in zip(fig.subplots(1, n, squeeze=False)[0], mats.items()):
        grid = [[cells.get((m, s), math.nan) for s in strategies] for m in models]
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(strategies)), strategies)
        ax.set_yticks(range(len(models)), models)
        ax.set_title(f"best val acc ({ds})")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, "-" if math.isnan(v) else f"{v:.3f}", ha="center", va="center",
                        color="black" if v > 0.6 else "white")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def write(folder: Path, parent, rows: list[Row]) -> list[Path]:
    mats = matrices(rows)
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "table.md", folder / "runs.csv", folder / "curves.png", folder / "matrix.png"]
    files[0].write_text(markdown(parent, rows, mats))
    files[1].write_text(csv_text(rows))
    plot_curves(rows).savefig(files[2], dpi=110)
    plot_matrix(mats).savefig(files[3], dpi=110)
    return files


def run(uri: str, experiment: str, which: str, out: str | None) -> int:
    client = store.open_client(uri)
    parent = store.find_sweep(client, experiment, which, uri)
    rows = collect(client, parent)
    if not rows:
        raise TLError(f"sweep {parent.info.run_id} has no runs yet: its jobs create them as they start")
    finished = sum(r.status == "FINISHED" for r in rows)
    exp = client.get_experiment(parent.info.experiment_id)
    print(f"Sweep {parent.info.run_id} ({parent.info.run_name}) in experiment {exp.name!r}: "
          f"{len(rows)} runs, {finished} finished\n")
    header, body = table(rows)
    print("\n".join(_aligned(header, body, RIGHT)))
    print("* best val acc" + ("; runs not FINISHED are marked with their status" if finished < len(rows) else ""))
    print("\n".join(matrix_lines(matrices(rows))))

    with tempfile.TemporaryDirectory(prefix="tl-compare-") as tmp:
        folder = Path(out) if out else Path(tmp)
        files = write(folder, parent, rows)
        for f in files:
            client.log_artifact(parent.info.run_id, str(f), ARTIFACT_DIR)
    print(f"\nLogged to the sweep's parent run under {ARTIFACT_DIR}/: {', '.join(f.name for f in files)}"
          + (f" (also written to {out})" if out else ""))
    print(tracking.ui_hint(uri, parent.info.experiment_id, [r.run_id for r in rows]))
    from tl import rank  # did a `tl rank` of the same data predict these results?

    held = rank.sweep_agreement(client, parent)
    if held:
        print("\n" + held)
    return 0
