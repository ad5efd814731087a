"""The metric maths of a run's diagnostics: confusion matrix and per-class precision, recall
and F1 of predictions against targets, by scikit-learn, as plain lists and dicts to write out."""

from __future__ import annotations


def confusion(targets: list[int], preds: list[int], n_classes: int) -> list[list[int]]:
    """Counts, rows = true class, columns = predicted class."""
    if not targets:  # scikit-learn refuses an empty split; its matrix is all zeros
        return [[0] * n_classes for _ in range(n_classes)]
    # Imported here for start-up time: scikit-learn brings scipy.stats, needed only once a
    # run's epochs are over.
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(targets, preds, labels=list(range(n_classes))).tolist()


def per_class(targets: list[int], preds: list[int], classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of each class; 0/0 counts as 0 (a class never
    predicted has no precision), as scikit-learn's `zero_division=0` says."""
    labels = list(range(len(classes)))
    if not targets:
        return [{"class": c, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for c in classes]
    from sklearn.metrics import precision_recall_fscore_support  # start-up time, as above

    p, r, f, s = precision_recall_fscore_support(targets, preds, labels=labels, zero_division=0)
    return [{"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)]


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
