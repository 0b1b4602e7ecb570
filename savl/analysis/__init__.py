"""Representation analysis: dependence estimators, probes, embeddings and the paper's protocols."""

from savl.analysis.club import club
from savl.analysis.embed import embed, knn_purity
from savl.analysis.hsic import HSICTest, hsic, hsic_test
from savl.analysis.mine import MineResult, mine
from savl.analysis.probes import cluster_labels, clustering_accuracy, linear_probe, matched_accuracy

__all__ = [
    "HSICTest",
    "MineResult",
    "club",
    "cluster_labels",
    "clustering_accuracy",
    "embed",
    "hsic",
    "hsic_test",
    "knn_purity",
    "linear_probe",
    "matched_accuracy",
    "mine",
]
