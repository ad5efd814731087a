"""The metric maths of a run's diagnostics: confusion matrix and per-class precision, recall
and F1 of predictions against targets, as plain lists and dicts to write out.

Counted here, not by scikit-learn: importing its metrics (which import scipy) took 1.3 s of
every training process, more than the 25 epochs of a `freeze` run; the counts are exact
integers and the ratios follow scikit-learn's definitions (`zero_division=0`), which a test
checks against scikit-learn itself.
"""

from __future__ import annotations

import torch


def confusion(targets: list[int], preds: list[int], n_classes: int) -> list[list[int]]:
    """Counts, rows = true class, columns = predicted class."""
    pairs = torch.as_tensor(targets, dtype=torch.int64) * n_classes + torch.as_tensor(preds, dtype=torch.int64)
    return torch.bincount(pairs, minlength=n_classes * n_classes).view(n_classes, n_classes).tolist()


def per_class(targets: list[int], preds: list[int], classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of each class; 0/0 counts as 0 (a class never
    predicted has no precision), as scikit-learn's `zero_division=0` says."""
    m = confusion(targets, preds, len(classes))
    out = []
    for i, c in enumerate(classes):
        tp, support, predicted = m[i][i], sum(m[i]), sum(row[i] for row in m)
        out.append({"class": c, "precision": tp / predicted if predicted else 0.0,
                    "recall": tp / support if support else 0.0,
                    # F1 as 2TP / (2TP + FP + FN): 0 when the class is neither seen nor predicted
                    "f1": 2 * tp / (support + predicted) if support + predicted else 0.0,
                    "support": support})
    return out


def summary(matrix: list[list[int]], scores: list[dict]) -> dict:
    """Accuracy and the macro averages (every class counts once, seen or not) over `scores`."""
    total = sum(map(sum, matrix))
    n = max(len(scores), 1)
    return {
        "accuracy": sum(matrix[i][i] for i in range(len(matrix))) / total if total else 0.0,
        "macro_precision": sum(s["precision"] for s in scores) / n,
        "macro_recall": sum(s["recall"] for s in scores) / n,
        "macro_f1": sum(s["f1"] for s in scores) / n,
        "images": total,
        "per_class": scores,
    }
