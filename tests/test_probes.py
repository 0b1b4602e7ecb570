"""Linear probes, k-means clustering accuracy with Hungarian matching, and the t-SNE embedding."""

import numpy as np
import pytest

from savl.analysis import (
    cluster_labels,
    clustering_accuracy,
    embed,
    knn_purity,
    linear_probe,
    matched_accuracy,
)
from savl.analysis._arrays import one_hot
from savl.errors import ConfigError, DataError


def blobs(n_per, k, d, spread, seed):
    rng = np.random.default_rng(seed)
    centres = 10.0 * rng.standard_normal((k, d))
    labels = np.repeat(np.arange(k), n_per)
    return centres[labels] + spread * rng.standard_normal((n_per * k, d)), labels


def test_linear_probe_separable_and_random():
    x, y = blobs(40, 3, 8, 1.0, seed=0)
    assert linear_probe(x, y) == pytest.approx(1.0)
    assert linear_probe(x, one_hot(y)) == pytest.approx(1.0)  # one-hot labels accepted
    rng = np.random.default_rng(1)
    chance = linear_probe(rng.standard_normal((300, 8)), rng.integers(0, 4, 300))
    assert abs(chance - 0.25) < 0.1


def test_linear_probe_checks_class_sizes():
    with pytest.raises(DataError, match="smallest class"):
        linear_probe(np.random.default_rng(0).standard_normal((12, 2)), [0] * 10 + [1] * 2)
    with pytest.raises(DataError, match="2 classes"):
        linear_probe(np.zeros((10, 2)), [0] * 10)
    with pytest.raises(ConfigError):
        linear_probe(np.zeros((10, 2)), [0, 1] * 5, folds=1)


def test_matched_accuracy_hand_made_confusion():
    # Clusters 7, 8, 9 against labels 0, 1, 2:
    #          label 0  label 1  label 2
    # clus 7      1        4        0
    # clus 8      3        1        0
    # clus 9      0        1        2
    # Best one-to-one matching: 7->1 (4), 8->0 (3), 9->2 (2) = 9 of 12.
    pred = [7] * 5 + [8] * 4 + [9] * 3
    lab = [0, 1, 1, 1, 1] + [0, 0, 0, 1] + [1, 2, 2]
    assert matched_accuracy(pred, lab) == pytest.approx(9 / 12)
    # A case where greedy matching (each cluster to its largest label) is not optimal:
    #   clus a: label0 3, label1 2 ; clus b: label0 3, label1 0  -> optimum a->1, b->0 = 5 of 8.
    assert matched_accuracy([0] * 5 + [1] * 3, [0, 0, 0, 1, 1, 0, 0, 0]) == pytest.approx(5 / 8)


def test_clustering_accuracy_blobs_and_permutation_invariance():
    x, y = blobs(50, 4, 6, 0.5, seed=2)
    assert clustering_accuracy(x, y) == pytest.approx(1.0)
    perm = np.array([3, 0, 2, 1])
    assert clustering_accuracy(x, perm[y]) == pytest.approx(1.0)
    x2, y2 = blobs(50, 3, 2, 6.0, seed=3)  # overlapping: accuracy below 1 but the same under relabelling
    a = clustering_accuracy(x2, y2)
    assert a < 1.0
    assert clustering_accuracy(x2, np.array([10, 20, 30])[y2]) == pytest.approx(a)


def test_constant_features_give_majority_fraction():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    assert clustering_accuracy(np.ones((100, 4)), y) == pytest.approx(0.5)


def test_cluster_labels_are_renamed_to_label_ids():
    x, y = blobs(30, 3, 4, 0.5, seed=4)
    ids = np.array([5, 9, 2])[y]
    pred = cluster_labels(x, ids, seed=0)
    assert np.array_equal(pred, ids)
    raw = cluster_labels(x, k=3, seed=0)
    assert set(np.unique(raw)) == {0, 1, 2}
    with pytest.raises(ConfigError):
        cluster_labels(x)


def test_embed_shape_determinism_and_separation():
    x, y = blobs(25, 3, 50, 1.0, seed=5)
    e1 = embed(x, seed=0)
    e2 = embed(x, seed=0)
    assert e1.shape == (75, 2)
    assert np.allclose(e1, e2)
    assert knn_purity(e1, y, k=5) > 0.95
    rng = np.random.default_rng(6)
    noise = embed(rng.standard_normal((75, 50)), seed=0)
    assert knn_purity(noise, y, k=5) < 0.6


def test_knn_purity_hand_computed():
    pts = np.array([[0.0], [0.9], [2.0], [10.0], [11.0]])
    lab = np.array([0, 0, 1, 1, 1])
    # 1-NN: 0->0.9 (same), 0.9->0 (same), 2->0.9 (different), 10->11 (same), 11->10 (same).
    assert knn_purity(pts, lab, k=1) == pytest.approx(4 / 5)
