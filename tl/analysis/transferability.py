"""Transferability scores: how well a frozen backbone's features suit a labelled dataset,
before any training. Pure functions on arrays.

- `logme`: LogME (You et al., ICML 2021), the log marginal evidence of a Bayesian linear model
  from features to each class's one-hot target, maximised over its prior and noise precisions
  (alpha, beta) by the fixed-point iteration of the reference implementation (thuml/LogME),
  divided by N and averaged over classes. Higher is better; scores compare backbones on one
  dataset only.
- `knn_accuracy`: a model-free check: val accuracy of a k-nearest-neighbour vote (cosine) over
  the train features.
"""

from __future__ import annotations

import numpy as np

from tl.errors import ConfigError

MAX_ITER = 11   # the reference's bound: it converges in a few steps
TOL = 1e-3      # relative change of alpha / beta at which it stops
EPS = 1e-5      # the reference's guard against a zero denominator


def _arrays(features, labels) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or y.ndim != 1 or len(f) != len(y):
        raise ConfigError(f"features must be N x D and labels N long, got {f.shape} and {y.shape}")
    if len(y) < 2:
        raise ConfigError(f"scoring needs at least 2 labelled examples, got {len(y)}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ConfigError("labels must be class indices 0..C-1")
    if not np.isfinite(f).all():
        raise ConfigError("features contain NaN or infinity: the backbone's output is broken")
    return f, y


def _spectrum(f: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of FᵀF (D of them, zeros included) and the targets projected on the left
    singular vectors of F (one row per nonzero direction)."""
    n, d = f.shape
    if n > d:  # D x D is the cheaper decomposition
        sigma, v = np.linalg.eigh(f.T @ f)
        sigma = np.clip(sigma, 0.0, None)
        keep = sigma > sigma.max() * 1e-12 if sigma.max() > 0 else np.zeros_like(sigma, dtype=bool)
        x = np.zeros((d, targets.shape[1]))
        x[keep] = (v[:, keep].T @ (f.T @ targets)) / np.sqrt(sigma[keep])[:, None]
        return sigma, x
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = np.concatenate([s ** 2, np.zeros(d - len(s))])
    x = np.concatenate([u.T @ targets, np.zeros((d - len(s), targets.shape[1]))])
    return sigma, x


def evidence(sigma: np.ndarray, x: np.ndarray, y_norm2: float, n: int) -> tuple[float, float, float]:
    """(evidence / N, alpha, beta) for one target vector, as the reference iterates them."""
    d = len(sigma)
    x2 = x ** 2
    residual_outside = max(y_norm2 - x2.sum(), 0.0)  # the target's part outside F's column space
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITER):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum()
        m2 = (sigma * x2 / (t + sigma) ** 2).sum()
        res2 = (x2 / (1 + sigma / t) ** 2).sum() + residual_outside
        alpha = gamma / (m2 + EPS)
        beta = (n - gamma) / (res2 + EPS)
        if abs(alpha / beta - t) / t <= TOL:
            break
    value = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * sigma))
             - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
    return float(value / n), float(alpha), float(beta)


def logme(features, labels) -> float:
    """LogME of `features` (N x D) for class indices `labels` (N): mean over classes of the
    per-sample log evidence. Computed in float64."""
    f, y = _arrays(features, labels)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ConfigError(f"LogME needs at least 2 classes in the labels, got {len(classes)}")
    targets = (y[:, None] == classes[None, :]).astype(np.float64)
    sigma, x = _spectrum(f, targets)
    n = len(y)
    return float(np.mean([evidence(sigma, x[:, c], float(targets[:, c] @ targets[:, c]), n)[0]
                          for c in range(len(classes))]))


def knn_accuracy(train_features, train_labels, val_features, val_labels, k: int = 10) -> float:
    """Accuracy on val of a distance-weighted k-NN vote over train, by cosine similarity."""
    from sklearn.neighbors import KNeighborsClassifier

    tf, ty = _arrays(train_features, train_labels)
    vf, vy = _arrays(val_features, val_labels)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k!r} must be a positive integer")
    knn = KNeighborsClassifier(n_neighbors=min(k, len(ty)), metric="cosine", weights="distance")
    knn.fit(tf, ty)
    return float((knn.predict(vf) == vy).mean())
