"""What the race's outcome says: the verdict over the confirmed runs (the same analysis as
`tl compare`, called in this one place), and how well each screen score predicted the outcome."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from scipy.stats import kendalltau

from tl import analysis
from tl.tracking import readback

SCORES = {"logme": "LogME", "knn_acc": "k-NN acc", "probe": "tuned linear probe (val)", "prior": "ImageNet top-1"}


def verdict(uri: str, experiment: str, confirm_parent: str) -> int:
    """What `tl compare` gives on the confirmed runs (the same `tl.analysis.report`): table,
    seed intervals, verdict, printed and logged under compare/ of the confirm parent."""
    client = readback.open_client(uri)
    report = analysis.report(client, confirm_parent)
    print(report.text)
    with tempfile.TemporaryDirectory(prefix="tl-answer-") as tmp:
        for f in report.write(Path(tmp)):
            client.log_artifact(confirm_parent, str(f), "compare")
    return 0


def per_backbone(answer) -> dict[str, float]:
    """Each backbone's outcome: its best mean test acc over the confirmed runs where it was
    confirmed (val where no test split), else its best val acc at full length in the race."""
    out: dict[str, float] = {}
    groups: dict = {}
    for o in answer.confirmed:
        if o.ok:
            value = o.test_acc if o.test_acc is not None else o.val_acc
            if value is not None:
                groups.setdefault(o.job.recipe, []).append(value)
    for recipe, values in groups.items():
        mean = sum(values) / len(values)
        out[recipe.model] = max(out.get(recipe.model, -1.0), mean)
    confirmed = {r.model for r in groups}
    for o in [*answer.heads, *(o for runs in answer.race.values() for o in runs)]:
        m = o.job.recipe.model
        if o.ok and o.val_acc is not None and o.epochs >= answer.settings.epochs and m not in confirmed:
            out[m] = max(out.get(m, -1.0), o.val_acc)
    return out


def ranking_check(answer) -> list[dict]:
    """Per screen score: Kendall's tau against the outcome over the backbones both have, and the
    top-1 regret (the outcome's best minus the outcome of the score's top pick), in points."""
    outcome = per_backbone(answer)
    rows = []
    for key, label in SCORES.items():
        scored = {m: row[key] for m, row in answer.screen.items() if row.get(key) is not None and m in outcome}
        row = {"score": label, "n": len(scored), "tau": None, "regret": None}
        if len(scored) >= 2:
            models = sorted(scored)
            tau = kendalltau([scored[m] for m in models], [outcome[m] for m in models]).statistic
            row["tau"] = None if tau is None or math.isnan(tau) else float(tau)
            pick = max(models, key=lambda m: scored[m])
            row["regret"] = 100 * (max(outcome[m] for m in models) - outcome[pick])
            row["pick"] = pick
        rows.append(row)
    return rows
