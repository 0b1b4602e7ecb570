"""Plumbing shared by the estimators: (n, d) float64 feature matrices, integer labels, one thread."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from savl.errors import DataError


def as_matrix(x, name: str = "x") -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor or nested list; shape (n,) or (n, d)) as float64 (n, d)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise DataError(f"{name}: expected shape (n, d), got {tuple(a.shape)}")
    if a.shape[0] < 2:
        raise DataError(f"{name}: need at least 2 samples, got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name}: contains NaN or infinite values")
    return a


def as_labels(labels, name: str = "labels") -> np.ndarray:
    """Integer labels from a (n,) vector of ids or a (n, k) one-hot matrix (argmax per row)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    a = np.asarray(labels)
    if a.ndim == 2:
        if a.shape[1] == 1:
            a = a[:, 0]
        else:
            a = a.argmax(axis=1)
    if a.ndim != 1:
        raise DataError(f"{name}: expected shape (n,) or one-hot (n, k), got {tuple(a.shape)}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise DataError(f"{name}: float labels must be whole numbers")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iub":
        # Strings or other hashable ids: map to 0..k-1 in sorted order.
        _, a = np.unique(a, return_inverse=True)
    return a.astype(np.int64)


def one_hot(labels) -> np.ndarray:
    """(n,) ids -> (n, k) float one-hot over the distinct ids (sorted)."""
    ids = as_labels(labels)
    _, inv = np.unique(ids, return_inverse=True)
    out = np.zeros((ids.size, inv.max() + 1), dtype=np.float64)
    out[np.arange(ids.size), inv] = 1.0
    return out


def check_pair(x: np.ndarray, y: np.ndarray, names: tuple[str, str] = ("x", "y")) -> None:
    """Raise when two sample sets do not pair up row by row."""
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{names[0]} and {names[1]} have different numbers of samples: {x.shape[0]} vs {y.shape[0]}")


@contextlib.contextmanager
def one_thread():
    """Run small fits on one thread (torch intra-op, OpenMP and BLAS pools), restored afterwards.

    The analysis problems are small (networks of a few thousand parameters, a few hundred to a few
    thousand samples): extra threads mostly spin. On the busy 2-core machine two threads made a 300-step
    MINE run 6x slower (33 s vs 5.7 s) and a 400-point t-SNE 8x slower (55 s vs 6.7 s).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)
