"""HSIC and its gamma test against a direct numpy computation, a permutation test and calibration."""

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from savl.analysis import hsic, hsic_test
from savl.analysis._arrays import one_hot
from savl.errors import DataError


def _direct_hsic(x, y):
    """Independent reference: explicit H, explicit kernels, median of the upper-triangle distances."""
    m = x.shape[0]

    def gram(a):
        d2 = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
        iu = np.triu_indices(m, 1)
        d = np.sqrt(d2[iu])
        s = np.median(d[d > 0])
        return np.exp(-d2 / (2 * s**2))

    h = np.eye(m) - np.ones((m, m)) / m
    return np.trace(gram(x) @ h @ gram(y) @ h) / m**2


def _perm_pvalue(x, y, n_perm, rng):
    stat = hsic(x, y)
    null = np.array([hsic(x, y[rng.permutation(len(y))]) for _ in range(n_perm)])
    return (1 + np.sum(null >= stat)) / (1 + n_perm), null


def test_matches_direct_numpy_computation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3))
    y = np.tanh(x[:, :2]) + 0.5 * rng.standard_normal((60, 2))
    assert hsic(x, y) == pytest.approx(_direct_hsic(x, y), rel=1e-10)
    assert hsic_test(x, y).statistic == pytest.approx(hsic(x, y), rel=1e-12)


def test_symmetric_scale_invariant_and_accepts_tensors():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 2))
    y = x[:, :1] ** 2 + 0.3 * rng.standard_normal((50, 1))
    ref = hsic(x, y)
    assert hsic(y, x) == pytest.approx(ref, rel=1e-12)
    # The median heuristic rescales the bandwidth with the data.
    assert hsic(7.0 * x - 3.0, y) == pytest.approx(ref, rel=1e-9)
    assert hsic(torch.from_numpy(x).float(), torch.from_numpy(y)) == pytest.approx(ref, rel=1e-5)


def test_independent_near_zero_dependent_large():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 2))
    indep = hsic(x, rng.standard_normal((300, 2)))
    dep = hsic(x, x**2 + 0.1 * rng.standard_normal((300, 2)))
    assert 0 <= indep < 0.005
    assert dep > 10 * indep  # measured: 0.0116 vs 0.0009


def test_pvalues_uniform_under_independence():
    ps = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        ps.append(hsic_test(rng.standard_normal((100, 2)), rng.standard_normal((100, 3))).p_value)
    ps = np.array(ps)
    # Measured: KS distance 0.11, 5.5 % of p-values below 0.05 (the gamma law is an approximation).
    assert kstest(ps, "uniform").statistic < 0.15
    assert 0.02 <= np.mean(ps < 0.05) <= 0.10
    assert 0.05 <= np.mean(ps < 0.10) <= 0.17


def test_dependent_uncorrelated_data_gives_tiny_pvalue():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, 1))
    y = x**2 + 0.1 * rng.standard_normal((100, 1))  # dependent but nearly uncorrelated
    assert abs(np.corrcoef(x[:, 0], y[:, 0])[0, 1]) < 0.5
    assert hsic_test(x, y).p_value < 1e-6


def test_gamma_pvalue_agrees_with_permutation_test():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((80, 1))
    y = 0.25 * x + rng.standard_normal((80, 1))  # weak dependence: p in the interesting range
    p_perm, null = _perm_pvalue(x, y, 400, rng)
    res = hsic_test(x, y)
    assert 1e-3 < p_perm < 0.5
    assert abs(res.p_value - p_perm) < 0.01  # measured: 0.0113 vs 0.0100
    assert res.statistic > np.median(null)


def test_labels_one_hot_and_constant_variable():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 90)
    x = labels[:, None] + 0.2 * rng.standard_normal((90, 2))
    assert hsic_test(x, one_hot(labels)).p_value < 1e-6
    const = np.ones((90, 1))
    assert hsic(x, const) == pytest.approx(0.0, abs=1e-15)
    assert hsic_test(x, const).p_value == 1.0


def test_bad_input_raises_one_line_errors():
    x = np.zeros((10, 2))
    with pytest.raises(DataError, match="different numbers of samples"):
        hsic(x, np.zeros((9, 2)))
    bad = np.ones((10, 2))
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        hsic(bad, x)
    with pytest.raises(DataError, match="shape"):
        hsic(np.zeros((4, 2, 2)), np.zeros((4, 2)))
    with pytest.raises(DataError, match="at least 6"):
        hsic_test(np.random.default_rng(0).standard_normal((5, 1)), np.zeros((5, 1)))
