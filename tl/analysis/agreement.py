"""Does a `tl rank` ranking hold? The rank correlation of its scores (LogME, k-NN accuracy) with
what the sweep then measured, per strategy, on the statistic the sweep's answer is ranked by:
each backbone's best group mean (test acc where every run has a test split, else best val acc).
Rank correlations over few backbones say little: under `MIN_BACKBONES` the line says so."""

from __future__ import annotations

from scipy.stats import kendalltau, spearmanr

from tl.analysis.groups import Dataset
from tl.tracking import runs as tracked

MIN_BACKBONES = 5  # below this, one swapped pair moves Spearman by 0.3 or more


def spearman(xs: list[float], ys: list[float]) -> float:
    return float(spearmanr(xs, ys).statistic)


def kendall(xs: list[float], ys: list[float]) -> float:
    return float(kendalltau(xs, ys).statistic)


def agreement(rank_scores: dict[str, float], results: dict[str, float], what: str = "best val acc") -> str:
    """One line: the Spearman correlation of the rank scores with the results, over the
    backbones both have (keys as in `Backbone.rank_key`)."""
    common = sorted(set(rank_scores) & set(results))
    if len(common) < 3:
        return f"{what}: {len(common)} backbone(s) both ranked and trained; a rank correlation needs at least 3"
    xs, ys = [rank_scores[k] for k in common], [results[k] for k in common]
    if len(set(xs)) == 1 or len(set(ys)) == 1:
        return f"{what}: every backbone has the same {'score' if len(set(xs)) == 1 else 'result'}; no rank correlation"
    return f"{what}: Spearman {spearman(xs, ys):+.2f} over {len(common)} backbones ({', '.join(common)})"


def caveat(rank_scores: dict[str, float], results: dict[str, float]) -> str | None:
    """Kendall's tau beside Spearman, and a warning when too few backbones make either mean much."""
    common = sorted(set(rank_scores) & set(results))
    xs, ys = [rank_scores[k] for k in common], [results[k] for k in common]
    if len(common) < 3 or len(set(xs)) == 1 or len(set(ys)) == 1:
        return None
    line = f"Kendall tau {kendall(xs, ys):+.2f}"
    if len(common) < MIN_BACKBONES:
        line += (f"; only {len(common)} backbones: a rank correlation over fewer than {MIN_BACKBONES} "
                 "means little either way (one swapped pair changes it a lot)")
    return line


def results(ds: Dataset, strategy: str) -> dict[str, float]:
    """Per backbone (`tl rank`'s key), the mean of its best group with this strategy."""
    out: dict[str, float] = {}
    for g in ds.groups:  # ranked, best first
        if g.strategy == strategy:
            out.setdefault(g.rows[0].rank_key, g.acc.mean)
    return out


def lines(rank_run, ds: Dataset) -> list[str]:
    """The agreement of one rank run with one dataset's groups, per strategy."""
    m = rank_run.data.metrics
    scores = {name: {k[len(prefix):]: v for k, v in m.items() if k.startswith(prefix)}
              for name, prefix in (("LogME", "logme."), ("k-NN acc", "knn_acc."))}
    seeds = max(g.acc.n for g in ds.groups) > 1
    what = ds.metric + (" (best group mean over seeds)" if seeds else "")
    out = []
    for strategy in dict.fromkeys(g.strategy for g in ds.groups):
        got = results(ds, strategy)
        for name, s in scores.items():
            out.append("  " + agreement(s, got, f"{name} vs {strategy} {what}"))
            note = caveat(s, got)
            if note:
                out.append("    " + note)
    return out


def _content_id(row) -> str | None:
    """The run's tl.data_id, or, for runs logged before it, the same id worked out from the
    logged dataset config while that data is still where it was."""
    if row.data_id:
        return row.data_id
    from tl.data import identity  # hashes the folder (and loads PIL): only for runs older than the tag

    return identity.data_id_from_params(row.dataset_params)


def sweep_agreement(client, experiment_id: str, rows, datasets: dict[str, Dataset]) -> str | None:
    """For `tl compare`: whether a `tl rank` on the sweep's data predicted its results. None when
    no rank run matches."""
    out = []
    for key, ds in datasets.items():
        if not ds.groups:
            continue
        ids = {_content_id(r) for g in ds.groups for r in g.rows} - {None}
        for did in sorted(ids):
            rank_run = tracked.rank_run(client, experiment_id, did)
            if rank_run is None:
                continue
            out.append(f"Does the ranking hold? tl rank run {rank_run.info.run_id} scored this data ({did}):")
            out += lines(rank_run, ds)
    return "\n".join(out) if out else None
