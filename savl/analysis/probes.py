"""Linear probes and clustering accuracy (paper §4.2: Table 1 probes, Table 5 clustering).

Both delegate the learning to scikit-learn (logistic regression, k-means) and the matching of
clusters to labels to scipy's Hungarian solver; only the bookkeeping is written here.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from savl.analysis._arrays import as_labels, as_matrix, check_pair, one_thread
from savl.errors import ConfigError, DataError


def linear_probe(features, labels, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic-regression probe on standardised features (Table 1).

    Stratified ``folds``-fold split shuffled with ``seed``; returns the mean held-out accuracy in [0, 1].
    """
    x = as_matrix(features, "features")
    y = as_labels(labels)
    check_pair(x, y[:, None], ("features", "labels"))
    if folds < 2:
        raise ConfigError(f"linear_probe: folds must be at least 2, got {folds}")
    ids, counts = np.unique(y, return_counts=True)
    if ids.size < 2:
        raise DataError("linear_probe: labels must contain at least 2 classes")
    if counts.min() < folds:
        raise DataError(f"linear_probe: the smallest class has {counts.min()} samples, fewer than folds={folds}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings(), one_thread():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(probe, x, y, cv=cv, scoring="accuracy")
    return float(np.mean(scores))


def confusion(predicted, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency table ``C[cluster, label]`` with the sorted cluster ids and label ids."""
    p, y = as_labels(predicted, "predicted"), as_labels(labels)
    check_pair(p[:, None], y[:, None], ("predicted", "labels"))
    pid, pinv = np.unique(p, return_inverse=True)
    lid, linv = np.unique(y, return_inverse=True)
    c = np.zeros((pid.size, lid.size), dtype=np.int64)
    np.add.at(c, (pinv, linv), 1)
    return c, pid, lid


def matched_accuracy(predicted, labels) -> float:
    """Accuracy after the best one-to-one matching of predicted clusters to labels (Hungarian)."""
    c, _, _ = confusion(predicted, labels)
    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(c[rows, cols].sum() / c.sum())


def _kmeans(x: np.ndarray, k: int, seed: int, fit_max: int | None) -> np.ndarray:
    km = KMeans(n_clusters=k, n_init=10, random_state=seed)
    rng = np.random.default_rng(seed)
    fit = x if fit_max is None or x.shape[0] <= fit_max else x[rng.choice(x.shape[0], fit_max, replace=False)]
    with warnings.catch_warnings(), one_thread():
        # Constant features give fewer distinct clusters than k; that is a valid (chance) outcome.
        warnings.simplefilter("ignore", ConvergenceWarning)
        km.fit(fit)
        return km.predict(x)


def cluster_labels(features, labels=None, k: int | None = None, seed: int = 0, fit_max: int | None = None):
    """k-means cluster ids per sample; with ``labels`` they are renamed to the matched label ids.

    ``k`` defaults to the number of distinct labels. ``fit_max`` fits k-means on a random subset of
    that many samples (then assigns all), for per-pixel codes. Clusters left unmatched (k larger than
    the number of labels) keep ids beyond the largest label.
    """
    x = as_matrix(features, "features")
    if labels is None and k is None:
        raise ConfigError("cluster_labels: give labels or k")
    if labels is not None:
        y = as_labels(labels)
        check_pair(x, y[:, None], ("features", "labels"))
        k = int(np.unique(y).size) if k is None else k
    if k < 1 or k > x.shape[0]:
        raise ConfigError(f"cluster_labels: k must be in [1, {x.shape[0]}], got {k}")
    pred = _kmeans(x, k, seed, fit_max)
    if labels is None:
        return pred
    c, pid, lid = confusion(pred, y)
    rows, cols = linear_sum_assignment(c, maximize=True)
    mapping = {int(pid[r]): int(lid[cl]) for r, cl in zip(rows, cols)}
    spare = iter(range(int(lid.max()) + 1, int(lid.max()) + 1 + pid.size))
    for p in pid:
        mapping.setdefault(int(p), next(spare))
    return np.array([mapping[int(p)] for p in pred], dtype=np.int64)


def clustering_accuracy(features, labels, seed: int = 0, fit_max: int | None = None) -> float:
    """k-means with k = number of distinct labels, Hungarian matching, accuracy (Table 5)."""
    pred = cluster_labels(features, labels, seed=seed, fit_max=fit_max)
    return float(np.mean(pred == as_labels(labels)))
