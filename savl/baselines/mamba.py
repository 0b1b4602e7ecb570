"""The Mamba mixer (Gu & Dao 2023, "Mamba" v1) and DACESR's Vision Mamba Module built on it (DACESR §IV-B3).

`MambaMixer(d_model)`: in-projection to 2 x (expand d_model) channels (x and the gate z), a causal depthwise
1-D convolution and SiLU on x, a projection of x to the step size's low-rank input and to B_t, C_t (input-
dependent: the "selective" part), the selective scan of `savl.baselines.selective_scan`, the gate silu(z), and
the out-projection. A is -exp(A_log) with the S4D-real initialisation A_log[d, n] = log(n + 1); the step size's
bias is initialised so that softplus(bias) is log-uniform in [dt_min, dt_max] (Mamba's initialisation).

`VisionMambaBlock(dim)`: X_out = X + Mixer(LayerNorm(X)) on the H*W token sequence in raster order
(unidirectional, as DACESR §IV-B3 says: "normalized ... linearly projected ... 1-D convolution ... SSM ...
gated ... combined with a residual connection"). The released DACESR code's block returns the mixer output
without that residual (its residual only spans a whole group); we follow the paper's text.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from savl.baselines.selective_scan import selective_scan


class MambaMixer(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_floor: float = 1e-4,
        chunk: int = 16,
    ):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.chunk = chunk
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.dt_proj._keep_init = True  # a shell's generic Linear initialisation must not reset the step sizes
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        with torch.no_grad():
            std = self.dt_rank**-0.5
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, L, d_model) -> (B, L, d_model)."""
        L = h.shape[1]
        x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, L) each
        x = F.silu(self.conv1d(x)[..., :L])  # causal: keep the first L outputs of the padded convolution
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # bias added inside the scan, before softplus
        y = selective_scan(
            x,
            delta,
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            chunk=self.chunk,
        )
        return self.out_proj(y.transpose(1, 2))


class VisionMambaBlock(nn.Module):
    """X + Mixer(LayerNorm(X)) on (B, L, C) tokens."""

    def __init__(self, dim: int, d_state: int, d_conv: int, expand: int, chunk: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = MambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand, chunk=chunk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))
