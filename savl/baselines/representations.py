"""The baselines' representations as encoders of the representation protocols (`savl.analysis`).

The protocols call `encoder.encode(lr)` and read `.mean`, a (B, m, h', w') map (savl.analysis.encoders):
Table 1 averages it over pixels, Table 5 resizes it to the LR grid and clusters it pixel by pixel.

- `GlobalCode(fn)`: one vector per LR image, `fn(lr) -> (B, m)` (ReDSR's code, `ReDSRNet.encode`; DACESR's
  embedding averaged over its tokens, `ree_vector`), as a 1 x 1 map. Table 1 reads it as it is.
- `SlidingCode(fn, patch, stride)`: a code per LR position for a global encoder: the LR image is padded by
  reflection (replication where too small), cut into `patch` x `patch` windows every `stride` pixels, each
  window encoded on its own, and the codes laid out on the window centres' grid. Table 5 then resizes that grid
  bilinearly to the LR pixels, as it does SAVL's posterior. A pixel's code therefore describes the window
  around it: regions smaller than a window are blurred together, which is the price of a global code in a
  per-pixel protocol (ReDSR trains its code on whole 64 x 64 patches, the book's on 32 x 16 halves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from savl.errors import ConfigError


@dataclass
class CodeMap:
    """A deterministic code map in the posterior interface of the protocols (`.mean`)."""

    mean: torch.Tensor


def ree_vector(ree: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """DACESR's REE as a vector encoder: its LR-branch embedding averaged over the tokens, (B, code_dim)."""
    return lambda lr: ree(lr, tuned=True).mean(1)


class GlobalCode(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], module: nn.Module | None = None):
        super().__init__()
        self.fn = fn
        self.module = module  # registered so that .eval() / .parameters() reach the encoder

    def encode(self, lr: torch.Tensor) -> CodeMap:
        return CodeMap(self.fn(lr)[:, :, None, None])


class SlidingCode(nn.Module):
    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        patch: int = 16,
        stride: int = 4,
        module: nn.Module | None = None,
        chunk: int = 256,
    ):
        super().__init__()
        if patch < 1 or stride < 1:
            raise ConfigError(f"SlidingCode: patch and stride must be >= 1, got {patch}, {stride}")
        self.fn, self.patch, self.stride, self.chunk = fn, patch, stride, chunk
        self.module = module

    def encode(self, lr: torch.Tensor) -> CodeMap:
        b, c, h, w = lr.shape
        p, s = self.patch, self.stride
        before, after = p // 2, p - 1 - p // 2  # the window of position (i, j) is centred on LR pixel (i, j)
        mode = "reflect" if min(h, w) > max(before, after) else "replicate"
        padded = F.pad(lr, (before, after, before, after), mode=mode)
        windows = padded.unfold(2, p, s).unfold(3, p, s)  # (b, c, rows, cols, p, p)
        rows, cols = windows.shape[2:4]
        windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, p, p)
        codes = torch.cat([self.fn(windows[i : i + self.chunk]) for i in range(0, len(windows), self.chunk)])
        return CodeMap(codes.reshape(b, rows, cols, -1).permute(0, 3, 1, 2))


#: The LR window and stride of a baseline's sliding code in the zoo's Table 5 probe: one Table 5 patch
#: (64 HR pixels, 16 LR) per window, a window centred on every fourth LR pixel.
PROBE_WINDOW, PROBE_STRIDE = 16, 4


def probe_encoders(model: nn.Module, window: int = PROBE_WINDOW, stride: int = PROBE_STRIDE):
    """A baseline SR network's representation as the two encoders of the probes, `(pooled, sliding)`:
    `GlobalCode` for Table 1 (the code of each crop as it is) and `SlidingCode` for Table 5 (a code per LR
    position). ReDSRNet: its degradation code (`encode`); DACESRNet: its REE's LR-branch embedding averaged
    over the tokens. None for a network with no such representation (HAT, DA-RHAG, a DACESR without REE)."""
    arch = getattr(model, "architecture", "")
    if arch == "ReDSRNet":
        fn, module = model.encode, model
    elif arch == "DACESRNet" and getattr(model, "ree", None) is not None:
        fn, module = ree_vector(model.ree), model.ree
    else:
        return None
    return GlobalCode(fn, module), SlidingCode(fn, window, stride, module=module)
