"""Representation analysis: dependence estimators, probes, embeddings and the paper's protocols."""

from savl.analysis._arrays import one_hot
from savl.analysis.club import club
from savl.analysis.embed import embed, knn_purity
from savl.analysis.hsic import HSICTest, hsic, hsic_test
from savl.analysis.mine import MineResult, mine
from savl.analysis.probes import cluster_labels, clustering_accuracy, linear_probe, matched_accuracy
from savl.analysis.protocols import (
    decoupling,
    format_table1,
    mean_dimension_sweep,
    ood_embedding,
    severity_across_levels,
    spatial_clustering,
    swap,
)

__all__ = [
    "HSICTest",
    "MineResult",
    "cluster_labels",
    "club",
    "clustering_accuracy",
    "decoupling",
    "embed",
    "format_table1",
    "hsic",
    "hsic_test",
    "knn_purity",
    "linear_probe",
    "matched_accuracy",
    "mean_dimension_sweep",
    "mine",
    "one_hot",
    "ood_embedding",
    "severity_across_levels",
    "spatial_clustering",
    "swap",
]
