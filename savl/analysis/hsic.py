"""HSIC: the Hilbert–Schmidt independence criterion and its gamma-approximation test (paper §4.2).

Written by hand because no maintained package we depend on ships HSIC. Conventions (Gretton et al.,
2005 and 2008):

- Gaussian kernels ``k(a, b) = exp(-|a - b|^2 / (2 s^2))``; the bandwidth ``s`` of each variable is the
  median of its non-zero pairwise distances (the median heuristic; ``s = 1`` when all points coincide).
- Biased estimator ``HSIC_b = tr(K H L H) / m^2`` with ``H = I - 11'/m``.
- Test: under independence ``m * HSIC_b`` is approximately Gamma(alpha, theta) with its mean and
  variance estimated from the data; the p-value is the Gamma upper tail.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.spatial.distance import pdist, squareform
from scipy.stats import gamma

from savl.analysis._arrays import as_matrix, check_pair
from savl.errors import DataError


class HSICTest(NamedTuple):
    """Result of :func:`hsic_test`: ``statistic`` is HSIC_b (same scale as :func:`hsic`)."""

    statistic: float
    p_value: float


def median_bandwidth(x) -> float:
    """Median heuristic: the median non-zero pairwise Euclidean distance (1.0 if all points coincide)."""
    d = pdist(as_matrix(x))
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


def gaussian_gram(x, bandwidth: float | None = None) -> np.ndarray:
    """Gram matrix ``exp(-|x_i - x_j|^2 / (2 s^2))``, ``s`` by the median heuristic unless given."""
    a = as_matrix(x)
    s = median_bandwidth(a) if bandwidth is None else float(bandwidth)
    if not s > 0:
        raise DataError(f"bandwidth must be positive, got {bandwidth}")
    return np.exp(-squareform(pdist(a, "sqeuclidean")) / (2.0 * s * s))


def _centre(k: np.ndarray) -> np.ndarray:
    # H K H without forming H: subtract row and column means, add back the grand mean.
    return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def _grams(x, y) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_matrix(x, "x"), as_matrix(y, "y")
    check_pair(a, b)
    return gaussian_gram(a), gaussian_gram(b)


def hsic(x, y) -> float:
    """Biased HSIC ``tr(K H L H) / m^2`` between paired samples ``x`` (n, dx) and ``y`` (n, dy).

    Labels should be passed one-hot (``savl.analysis.one_hot``) so that the Gaussian kernel
    sees only "same" or "different".
    """
    k, l = _grams(x, y)
    m = k.shape[0]
    # tr(K H L H) = sum((H K H) * L) since H is symmetric and idempotent.
    return float(np.sum(_centre(k) * l) / (m * m))


def hsic_test(x, y) -> HSICTest:
    """HSIC_b and the p-value of independence by the gamma approximation (Gretton et al., 2008)."""
    k, l = _grams(x, y)
    m = k.shape[0]
    if m < 6:
        raise DataError(f"hsic_test needs at least 6 samples, got {m}")
    kc, lc = _centre(k), _centre(l)
    stat = float(np.sum(kc * lc) / m)  # m * HSIC_b, the quantity the Gamma law describes

    # Variance of HSIC_b under independence.
    v = (kc * lc / 6.0) ** 2
    var = (v.sum() - np.trace(v)) / (m * (m - 1))
    var *= 72.0 * (m - 4) * (m - 5) / (m * (m - 1) * (m - 2) * (m - 3))
    # Mean of HSIC_b under independence, from the off-diagonal kernel means.
    mu_x = (k.sum() - np.trace(k)) / (m * (m - 1))
    mu_y = (l.sum() - np.trace(l)) / (m * (m - 1))
    mean = (1.0 + mu_x * mu_y - mu_x - mu_y) / m

    if var <= 0 or mean <= 0:
        # A constant variable: no dependence can be detected.
        return HSICTest(statistic=stat / m, p_value=1.0)
    shape = mean * mean / var
    scale = var * m / mean
    p = float(gamma.sf(stat, shape, scale=scale))
    return HSICTest(statistic=stat / m, p_value=p)
