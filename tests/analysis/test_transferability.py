"""LogME and k-NN accuracy on features the tests make: separable features score higher than the
same features with shuffled labels, and LogME's evidence equals a direct computation of the
Bayesian linear model's marginal likelihood."""

import numpy as np
import pytest

from tl.analysis import transferability as tr
from tl.errors import ConfigError


def blobs(n_per_class=40, d=16, classes=3, spread=0.5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, d))
    y = np.repeat(np.arange(classes), n_per_class)
    return centres[y] + rng.normal(0, spread, (len(y), d)), y


def reference_evidence(f, y, alpha_beta_steps=tr.MAX_ITER, tol=tr.TOL, eps=tr.EPS):
    """The model written out: A = alpha I + beta FᵀF, m = beta A⁻¹ Fᵀy, log|A| directly; alpha
    and beta updated by MacKay's fixed point, the same steps as the reference implementation."""
    n, d = f.shape
    ftf, fty = f.T @ f, f.T @ y
    eig = np.linalg.eigvalsh(ftf)
    alpha, beta = 1.0, 1.0
    for _ in range(alpha_beta_steps):
        a = alpha * np.eye(d) + beta * ftf
        m = beta * np.linalg.solve(a, fty)
        gamma = np.sum(beta * eig / (alpha + beta * eig))
        m2, res2 = m @ m, np.sum((y - f @ m) ** 2)
        t = alpha / beta
        alpha, beta = gamma / (m2 + eps), (n - gamma) / (res2 + eps)
        if abs(alpha / beta - t) / t <= tol:
            break
    logdet = np.linalg.slogdet(alpha * np.eye(d) + beta * ftf)[1]
    ev = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - logdet / 2 - beta / 2 * res2
          - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
    return ev / n


def test_separable_features_score_higher_than_the_same_features_with_shuffled_labels():
    f, y = blobs()
    shuffled = np.random.default_rng(1).permutation(y)
    assert tr.logme(f, y) > tr.logme(f, shuffled) + 0.1
    assert tr.knn_accuracy(f[::2], y[::2], f[1::2], y[1::2]) == 1.0
    assert tr.knn_accuracy(f[::2], shuffled[::2], f[1::2], shuffled[1::2]) < 0.6


def test_more_separated_classes_score_higher():
    tight, y = blobs(spread=0.3)
    loose, _ = blobs(spread=3.0)
    assert tr.logme(tight, y) > tr.logme(loose, y)


@pytest.mark.parametrize("n_per_class, d", [(40, 16), (5, 32)], ids=["N>D", "N<D"])
def test_logme_equals_the_mean_of_directly_computed_per_class_evidence(n_per_class, d):
    f, y = blobs(n_per_class=n_per_class, d=d)
    expected = np.mean([reference_evidence(f, (y == c).astype(float)) for c in range(3)])
    assert tr.logme(f, y) == pytest.approx(expected, rel=1e-6)


def test_logme_is_computed_in_float64_whatever_the_input_dtype():
    f, y = blobs()
    assert tr.logme(f.astype(np.float32), y) == pytest.approx(tr.logme(f, y), rel=1e-5)


@pytest.mark.parametrize("features, labels, message", [
    (np.zeros((4, 2, 2)), np.zeros(4, int), "features must be N x D"),
    (np.zeros((4, 2)), np.zeros(3, int), "features must be N x D and labels N long"),
    (np.zeros((4, 2)), np.zeros(4, int), "at least 2 classes"),
    (np.full((4, 2), np.nan), np.array([0, 1, 0, 1]), "NaN or infinity"),
    (np.zeros((4, 2)), np.array([0.5, 1, 0, 1]), "class indices"),
])
def test_bad_input_is_refused_with_what_is_wrong(features, labels, message):
    with pytest.raises(ConfigError, match=message):
        tr.logme(features, labels)
