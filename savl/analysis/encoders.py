"""Calling any encoder the same way in the representation protocols (`savl.analysis.protocols`).

An *encoder* here is anything that maps an LR batch (B, 3, h, w) in [0, 1] to a posterior with a
``.mean`` (B, m, h', w') (and ``.variance`` / ``.severity()`` where a figure needs them): a callable, or
an object with ``.encode`` (SAVL and its ablations, later baselines). Only the posterior mean is used
as the code, as in the paper. Modules are switched to eval mode for the call and restored afterwards;
every random draw goes through a generator seeded from ``seed``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from savl.errors import ConfigError, DataError


def encode_fn(encoder) -> Callable[[torch.Tensor], object]:
    """The ``lr -> posterior`` function of an encoder object (``.encode``) or a plain callable."""
    if hasattr(encoder, "encode") and callable(encoder.encode):
        return encoder.encode
    if callable(encoder):
        return encoder
    raise ConfigError(f"encoder must be callable or have .encode, got {type(encoder).__name__}")


def encoder_device(encoder) -> torch.device:
    """Where the encoder's parameters live (CPU for parameter-free callables)."""
    params = getattr(encoder, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def inference(encoder):
    """No gradients, eval mode for modules; the previous training flag is restored on exit."""
    was_training = getattr(encoder, "training", None)
    if isinstance(encoder, torch.nn.Module):
        encoder.eval()
    try:
        with torch.no_grad():
            yield encode_fn(encoder)
    finally:
        if isinstance(encoder, torch.nn.Module) and was_training:
            encoder.train()


def pooled_mean(posterior) -> torch.Tensor:
    """Global average of the posterior mean over pixels: (B, m, h, w) -> (B, m)."""
    mean = posterior.mean
    if mean.dim() != 4:
        raise DataError(f"posterior mean must be (B, m, h, w), got {tuple(mean.shape)}")
    return mean.float().mean(dim=(2, 3))
