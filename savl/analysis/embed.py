"""Two-dimensional embeddings of codes for the t-SNE figures (Fig. 6/8/10/14), with a purity score."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors

from savl.analysis._arrays import as_labels, as_matrix, check_pair, one_thread
from savl.errors import DataError


def embed(features, seed: int = 0, pca_dim: int = 32, perplexity: float = 30.0) -> np.ndarray:
    """PCA to ``pca_dim`` (or fewer) then t-SNE to 2-D, seeded; returns (n, 2) float64.

    The perplexity is capped at (n - 1) / 3 so that small sets still embed.
    """
    x = as_matrix(features, "features")
    n, d = x.shape
    if n < 4:
        raise DataError(f"embed: need at least 4 samples, got {n}")
    k = min(pca_dim, d, n)
    if k < d:
        x = PCA(n_components=k, random_state=seed).fit_transform(x)
    tsne = TSNE(
        n_components=2,
        perplexity=min(perplexity, (n - 1) / 3.0),
        init="pca",
        random_state=seed,
    )
    with one_thread():
        return tsne.fit_transform(x).astype(np.float64)


def knn_purity(points, labels, k: int = 5) -> float:
    """Mean fraction of each point's ``k`` nearest neighbours (itself excluded) sharing its label."""
    x = as_matrix(points, "points")
    y = as_labels(labels)
    check_pair(x, y[:, None], ("points", "labels"))
    k = min(k, x.shape[0] - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    # Column 0 is the point itself (distance 0) unless duplicates tie; drop by identity instead.
    same = []
    for i, row in enumerate(idx):
        nb = [j for j in row if j != i][:k]
        same.append(np.mean(y[nb] == y[i]))
    return float(np.mean(same))
