"""Mamba's selective scan (Gu & Dao 2023; DACESR's Eq. 3-5) in plain PyTorch, for CPU and GPU alike.

For every batch b, channel d and state n, with Delta = softplus(delta + delta_bias) (zero-order hold, Eq. 4,
with Mamba's simplification B_bar = Delta B):

    h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t,      y_t = C_t . h_t + D u_t,      out_t = y_t silu(z_t)

`selective_scan_sequential` runs this recurrence step by step (the reference). `selective_scan` computes the
same numbers a chunk at a time: inside a chunk of T steps, with S_t the running sum of Delta A (<= 0),

    h_t = exp(S_t) h_0 + sum_{s <= t} exp(S_t - S_s) Delta_s B_s u_s,

a masked T x T sum whose exponents are never positive (no overflow, unlike the exp(-S_s) factorisation), and
the state at the chunk's end seeds the next chunk. Under autograd each chunk is recomputed in the backward pass
(activation checkpointing), so memory stays at one chunk's T x T block plus the chunk-end states. The upstream
CUDA kernels (mamba_ssm) fuse the same computation; they are not needed here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    if u.dim() != 3 or delta.shape != u.shape or A.dim() != 2 or A.shape[0] != u.shape[1]:
        raise ValueError(
            f"selective_scan: u, delta (B, D, L) and A (D, N) expected, got {tuple(u.shape)}, "
            f"{tuple(delta.shape)}, {tuple(A.shape)}"
        )
    want = (u.shape[0], A.shape[1], u.shape[2])
    if tuple(B.shape) != want or tuple(C.shape) != want:
        raise ValueError(f"selective_scan: B and C must be {want}, got {tuple(B.shape)}, {tuple(C.shape)}")
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _finish(y, u, D, z):
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan_sequential(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence above, one step at a time (the reference `selective_scan` is tested against).

    u, delta, z: (batch, D, L); A: (D, N); B, C: (batch, N, L); D, delta_bias: (D,). Returns (batch, D, L).
    """
    delta = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        dt = delta[:, :, t, None]  # (b, d, 1)
        h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))
    return _finish(torch.stack(ys, dim=-1), u, D, z)


def _chunk(dA: torch.Tensor, dBu: torch.Tensor, Ct: torch.Tensor, h0: torch.Tensor):
    """One chunk: dA, dBu (b, d, T, n), Ct (b, T, n), h0 (b, d, n) -> y (b, d, T), h_T (b, d, n)."""
    S = dA.cumsum(dim=2)  # (b, d, T, n)
    T = S.shape[2]
    diff = S[:, :, :, None, :] - S[:, :, None, :, :]  # (b, d, T_t, T_s, n): S_t - S_s
    causal = torch.ones(T, T, dtype=torch.bool, device=S.device).tril()
    weights = torch.exp(diff.masked_fill(~causal[:, :, None], float("-inf")))
    h = (weights * dBu[:, :, None, :, :]).sum(dim=3) + torch.exp(S) * h0[:, :, None, :]
    y = (h * Ct[:, None, :, :]).sum(-1)
    return y, h[:, :, -1]


def _factorised(dA: torch.Tensor, dBu: torch.Tensor, Ct: torch.Tensor, chunk: int) -> torch.Tensor:
    """All chunks at once: h_t = exp(S_t) (H + cumsum_s exp(-S_s) Delta_s B_s u_s) inside each chunk (H the
    state entering it), then one short sequential pass over the chunk-end states. Exact while exp(-S) stays
    finite, i.e. while no chunk decays by more than `MAX_LOG_RANGE` (the caller checks)."""
    b, d, L, n = dA.shape
    pad = (-L) % chunk
    if pad:  # zero log-decay and zero input: padded steps change nothing before them
        dA, dBu, Ct = F.pad(dA, (0, 0, 0, pad)), F.pad(dBu, (0, 0, 0, pad)), F.pad(Ct, (0, 0, 0, pad))
    K = (L + pad) // chunk
    S = dA.reshape(b, d, K, chunk, n).cumsum(dim=3)
    local = torch.exp(S) * torch.cumsum(torch.exp(-S) * dBu.reshape(b, d, K, chunk, n), dim=3)
    decay, ends = torch.exp(S[:, :, :, -1]), local[:, :, :, -1]  # (b, d, K, n)
    H, entering = torch.zeros_like(ends[:, :, 0]), []
    for k in range(K):
        entering.append(H)
        H = decay[:, :, k] * H + ends[:, :, k]
    h = local + torch.exp(S) * torch.stack(entering, dim=2)[:, :, :, None]
    y = (h * Ct.reshape(b, 1, K, chunk, n)).sum(-1)
    return y.reshape(b, d, K * chunk)[..., :L]


def _quadratic(dA: torch.Tensor, dBu: torch.Tensor, Ct: torch.Tensor, chunk: int) -> torch.Tensor:
    h = dA.new_zeros(dA.shape[0], dA.shape[1], dA.shape[3])
    ys = []
    for s in range(0, dA.shape[2], chunk):
        y, h = _chunk(dA[:, :, s : s + chunk], dBu[:, :, s : s + chunk], Ct[:, s : s + chunk], h)
        ys.append(y)
    return torch.cat(ys, dim=-1)


#: Largest decay, in nats, of one chunk for which the factorised form is used (exp(80) ~ 5.5e34 < float32's
#: 3.4e38); beyond it the chunk is computed with the T x T form, whose exponents are never positive.
MAX_LOG_RANGE = 80.0


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, chunk: int = 16):
    """The selective scan, chunk by chunk (see the module docstring); same arguments as
    `selective_scan_sequential`, plus `chunk` (steps per chunk).

    Two exact forms: the factorised one (`_factorised`, O(L N) work, all chunks at once) when every chunk's
    total decay stays below `MAX_LOG_RANGE` nats, else the T x T one (`_quadratic`, O(L T N) work). Under
    autograd the whole scan is recomputed in the backward pass (activation checkpointing), so it keeps only its
    inputs between the passes."""
    if chunk < 1:
        raise ValueError(f"selective_scan: chunk must be >= 1, got {chunk}")
    delta = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    dA = delta[..., None] * A[None, :, None, :]  # (b, d, L, n), <= 0
    dBu = (delta * u)[..., None] * B.transpose(1, 2)[:, None]  # (b, d, L, n)
    Ct = C.transpose(1, 2)  # (b, L, n)
    pad = (-dA.shape[2]) % chunk
    per_chunk = F.pad(dA.detach(), (0, 0, 0, pad)).reshape(*dA.shape[:2], -1, chunk, dA.shape[3]).sum(3)
    form = _factorised if float(-per_chunk.min()) <= MAX_LOG_RANGE else _quadratic
    if torch.is_grad_enabled() and any(t.requires_grad for t in (dA, dBu, Ct)):
        y = checkpoint(form, dA, dBu, Ct, chunk, use_reentrant=False)
    else:
        y = form(dA, dBu, Ct, chunk)
    return _finish(y, u, D, z)
