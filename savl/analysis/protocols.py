"""The paper's representation experiments as functions of any encoder (the protocols of chapter 08).

An *encoder* here is anything that maps an LR batch (B, 3, h, w) in [0, 1] to a posterior with a
``.mean`` (B, m, h', w') (and ``.variance`` / ``.severity()`` where a figure needs them): a callable, or
an object with ``.encode`` (SAVL and its ablations, later baselines). Only the posterior mean is used
as the code, as in the paper. Modules are switched to eval mode for the call and restored afterwards;
every random draw goes through a generator seeded from ``seed``.

- :func:`spatial_clustering`: Table 5 (patchwise degradations, per-pixel codes, k-means, matching);
  in :mod:`savl.analysis.table5`.
- :func:`decoupling` and :func:`format_table1`: Table 1 (HSIC, MINE, linear probes for content and
  degradation) on the embedded photos instead of SVSR; in :mod:`savl.analysis.table1`.
- :func:`swap` (Fig. 12), :func:`mean_dimension_sweep` (A.6), :func:`ood_embedding` (A.7),
  :func:`severity_across_levels` (Fig. 5 analogue); in :mod:`savl.analysis.figures`.

What they share: calling an encoder (:mod:`savl.analysis.encoders`) and the controlled inputs
(:mod:`savl.analysis.inputs`). This module gathers the names where chapters and tests import them.
"""

from savl.analysis.encoders import encode_fn, encoder_device, inference, pooled_mean
from savl.analysis.figures import mean_dimension_sweep, ood_embedding, severity_across_levels, swap
from savl.analysis.inputs import add_noise, as_image_list, center_crop, degrade, downsample
from savl.analysis.table1 import PAPER_TABLE1_SAVL, decoupling, format_table1
from savl.analysis.table5 import PAPER_TABLE5, spatial_clustering

__all__ = [
    "PAPER_TABLE1_SAVL",
    "PAPER_TABLE5",
    "add_noise",
    "as_image_list",
    "center_crop",
    "decoupling",
    "degrade",
    "downsample",
    "encode_fn",
    "encoder_device",
    "format_table1",
    "inference",
    "mean_dimension_sweep",
    "ood_embedding",
    "pooled_mean",
    "severity_across_levels",
    "spatial_clustering",
    "swap",
]
