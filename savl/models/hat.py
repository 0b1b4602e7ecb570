"""HAT, the backbone of the SR network: window attention, HAB, OCAB, RHAG and the x4 shell.

Written from the HAT paper's description (Chen et al., "Activating More Pixels in Image Super-Resolution
Transformer"), not from its code. Token tensors are (B, L, C) with L = H*W in row-major order; images are
(B, C, H, W). Attention runs through `torch.nn.functional.scaled_dot_product_attention` with an additive float
bias (the relative position bias, plus the shifted-window mask); every attention module also has a
`reference=True` path that materialises softmax(Q K^T * scale + bias) V, which the tests and the FLOP benchmark
use. Every call hands SDPA contiguous q, k, v (strided inputs can send it down a slower path). On a GPU,
`set_flex_attention(True)` switches WindowAttention and OCAB to FlexAttention, which adds the relative position
bias from its table inside the kernel (`flex_biased_attention`); elsewhere they stay on SDPA.

Extra attention biases (DSCA's severity term, savl.models.dsca) enter as `biases={shift: bias}`, one per window
shift, added to the same pre-softmax logits as the relative position bias and the shifted-window mask. A bias
is either a dense (B*nW, heads or 1, N, N) tensor or a `FactoredBias(left, right)` meaning left @ right^T:
the fused path appends it to q and k as extra channels, so no (N x N) tensor is built for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from savl.errors import ConfigError, ImageError

# Mean of DIV2K in RGB, subtracted before the network and added back after (HAT's "mean shift").
RGB_MEAN = (0.4488, 0.4371, 0.4040)
# Logit given to a pair of pixels from different regions of a shifted window (HAT's value).
SHIFT_MASK_VALUE = -100.0
# Without gradients, the upsampling tail runs in horizontal bands once its full-resolution feature map would
# exceed this many bytes, each band with TAIL_HALO LR rows of context (enough for its four 3x3 convolutions at
# 1x, 1x, 2x and 4x: 1 + 1 + 1/2 + 1/4 rows): the same values, at a fraction of the tail's peak memory. 32 MiB
# runs a 144x144 LR tile of a 64-feature x4 tail in 3 bands: peak memory of a 256x256 LR image in 4 such tiles
# 258-282 -> 135-168 MB, whole image 356-482 -> 290-317 MB, at the same speed (CPU time 1.00-1.04x that of
# 128 MiB; benchmarks/results/hat_upstream_cpu.md).
TAIL_BAND_BYTES = 2**25
TAIL_HALO = 3


class FactoredBias(NamedTuple):
    """An extra attention-logit term in factored form, bias_ij = <left_i, right_j> (logit units), with left and
    right (B*nW, heads, N, r) for the windows of one shift; r is small (DSCA: 2)."""

    left: torch.Tensor
    right: torch.Tensor

    def dense(self) -> torch.Tensor:
        """The materialised (B*nW, heads, N, N) bias (reference path, tests)."""
        return self.left @ self.right.transpose(-2, -1)


# A guide maps (tokens, (H, W)) -> (tokens, {shift: extra attention bias}); DSCA is one (savl.models.dsca).
Guide = Callable[[torch.Tensor, tuple[int, int]], tuple[torch.Tensor, dict[int, torch.Tensor | FactoredBias]]]


# --------------------------------------------------------------------------------------------------
# windows


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B*nW, window*window, C), windows in row-major order, pixels row-major inside."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)


def window_reverse(windows: torch.Tensor, window: int, H: int, W: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B*nW, window*window, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    B = windows.shape[0] // ((H // window) * (W // window))
    x = windows.view(B, H // window, W // window, window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


def relative_position_index(window: int) -> torch.Tensor:
    """(N, N) index into a (2w-1)^2 table: entry (i, j) encodes the offset p_i - p_j of pixels i, j in a window.

    Offsets along each axis lie in [-(w-1), w-1]; shifted by w-1 they index rows of a (2w-1) x (2w-1) grid.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N), in [0, 2w-2]
    return rel[0] * (2 * window - 1) + rel[1]


def overlapping_relative_position_index(window: int, overlap_window: int) -> torch.Tensor:
    """(w*w, ow*ow) index into OCAB's (w + ow - 1)^2 table for query window w and key/value window ow.

    The key window is centred on the query window (zero padding (ow - w)/2 on each side), so a key at
    position e of the key window sits at image offset e - pad from the query window's origin. HAT indexes
    its table without this centring; both are bijections onto the same table, so only the labelling differs.
    """
    pad = (overlap_window - window) // 2
    qy, qx = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(overlap_window), torch.arange(overlap_window), indexing="ij")
    q = torch.stack([qy.flatten(), qx.flatten()])
    k = torch.stack([ky.flatten(), kx.flatten()]) - pad
    rel = q[:, :, None] - k[:, None, :] + (overlap_window - 1 - pad)  # in [0, w + ow - 2]
    return rel[0] * (window + overlap_window - 1) + rel[1]


def shifted_window_mask(
    H: int, W: int, window: int, shift: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """(nW, N, N) additive mask for windows of an image rolled by (-shift, -shift): 0 within a region, -100 across.

    After the roll, the last window row/column holds pixels that were not neighbours in the image; each axis is
    cut into [0, H-w), [H-w, H-shift), [H-shift, H) and pixels attend only within their region label.
    Computed from the actual (padded) input size, so any size that is a multiple of the window works. The labels
    are computed from pixel coordinates (3 * row region + column region) rather than written slice by slice, so
    the mask stays one graph of comparisons under torch.export's symbolic sizes (the ONNX export of savl.export).
    """

    def region(n: int) -> torch.Tensor:  # 0, 1, 2 for the three cuts of an axis of length n
        i = torch.arange(n, device=device)
        return (i >= n - window).long() + (i >= n - shift).long()

    labels = (3 * region(H)[:, None] + region(W)[None, :]).float()[None, :, :, None]  # (1, H, W, 1)
    win = window_partition(labels, window).squeeze(-1)  # (nW, N)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, SHIFT_MASK_VALUE, 0.0).to(torch.float32)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float, reference: bool
) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v; SDPA with an additive float mask, or materialised when `reference`.

    On the CPU, a bias that needs a gradient (the relative position table in training) is also materialised:
    SDPA's CPU flash kernel has no gradient for its mask, so PyTorch would fall back to its math path, whose
    NaN-safe softmax costs about three plain ones (the explicit form is 1.2x faster forward + backward).
    """
    if reference:
        logits = (q * scale) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias
        return logits.softmax(dim=-1) @ v
    if bias is not None and bias.requires_grad and q.device.type == "cpu" and torch.is_grad_enabled():
        # in place: the product's backward needs q and k, not its output
        return ((q * scale) @ k.transpose(-2, -1)).add_(bias.to(q.dtype)).softmax(dim=-1) @ v
    if bias is not None:
        bias = bias.to(q.dtype).contiguous()
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


# FlexAttention switch (off by default). On a GPU, FlexAttention (torch.nn.attention.flex_attention, compiled) adds
# the relative position bias inside the kernel from its (table, index) pair, plus the shifted-window mask, instead
# of reading a materialised (heads, N, N) bias tensor; DSCA's severity term is already folded into q and k. The
# backward pass of FlexAttention exists on CUDA only, so elsewhere the switch leaves attention on SDPA.
_FLEX = {"enabled": False, "devices": ("cuda",), "compile": True, "compiled": None}


def set_flex_attention(enabled: bool) -> bool:
    """Turn the FlexAttention path of WindowAttention and OCAB on or off (process-wide); returns the old value."""
    old, _FLEX["enabled"] = _FLEX["enabled"], bool(enabled)
    return old


def _flex_applies(q: torch.Tensor) -> bool:
    return _FLEX["enabled"] and q.device.type in _FLEX["devices"]


def flex_biased_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor,
    index: torch.Tensor,
    scale: float,
    mask: torch.Tensor | None = None,
    compiled: bool | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + table[index[i, j], head] + mask[window, i, j]) v through FlexAttention's score_mod.

    q (Bw, heads, Nq, d), k and v (Bw, heads, Nk, d); table ((2w-1)^2 or OCAB's size, heads), index (Nq, Nk);
    mask (nW, Nq, Nk) or None, with window = batch row mod nW (window_partition's order). Bias terms are cast to
    q's dtype, as the SDPA path casts its bias. `compiled` (default: the switch's setting, on) runs the
    torch.compile'd kernel, what makes it fast on a GPU; eager FlexAttention is a slow reference implementation."""
    from torch.nn.attention.flex_attention import flex_attention

    table = table.to(q.dtype)
    if mask is None:

        def score_mod(score, b, h, qi, ki):
            return score + table[index[qi, ki], h]

    else:
        mask, n_windows = mask.to(q.dtype), mask.shape[0]

        def score_mod(score, b, h, qi, ki):
            return score + table[index[qi, ki], h] + mask[b % n_windows, qi, ki]

    fn = flex_attention
    if _FLEX["compile"] if compiled is None else compiled:
        if _FLEX["compiled"] is None:
            _FLEX["compiled"] = torch.compile(flex_attention)
        fn = _FLEX["compiled"]
    return fn(q.contiguous(), k.contiguous(), v.contiguous(), score_mod=score_mod, scale=scale)


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016); a few lines, so written here rather than importing
    torchvision (an optional dependency of savl)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class MLP(nn.Module):
    """Linear -> GELU -> Linear, hidden width dim * mlp_ratio (the transformer feed-forward)."""

    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


# --------------------------------------------------------------------------------------------------
# attention and convolution blocks


class WindowAttention(nn.Module):
    """(Shifted-)window multi-head self-attention with a relative position bias (Swin / HAT).

    forward(x (B*nW, N, C), mask (nW, N, N) or None, bias: (B*nW, heads or 1, N, N) tensor, FactoredBias or
    None) -> (B*nW, N, C). Logits: q k^T * head_dim^-0.5 + table[index] + mask + bias.
    """

    def __init__(self, dim: int, window: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"embed_dim {dim} is not divisible by heads {heads}")
        self.dim, self.window, self.heads = dim, window, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) relative position bias gathered from the table, contiguous (so a sum with the mask, or a
        logit tensor it is added to, comes out in plain row-major order without another copy)."""
        N = self.window * self.window
        table = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return table.view(N, N, self.heads).permute(2, 0, 1).contiguous()

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | FactoredBias | None = None,
        reference: bool = False,
    ) -> torch.Tensor:
        Bw, N, C = x.shape
        h, hd = self.heads, C // self.heads
        q, k, v = self.qkv(x).view(Bw, N, 3, h, hd).permute(2, 0, 3, 1, 4)  # each (B*nW, heads, N, hd)
        if isinstance(bias, FactoredBias):
            if reference:
                bias = bias.dense()
            else:
                # scale * [q, left/scale] . [k, right] = scale * q.k + left.right; v gets zero channels so q, k and
                # v keep one width (fused kernels need it); they are cut off the output below
                q = torch.cat([q, bias.left.to(q.dtype) / self.scale], dim=-1)
                k = torch.cat([k, bias.right.to(k.dtype)], dim=-1)
                v = F.pad(v, (0, bias.left.shape[-1]))
                bias = None
        if bias is None and not reference and _flex_applies(q):
            table, index = self.relative_position_bias_table, self.relative_position_index
            out = flex_biased_attention(q, k, v, table, index, self.scale, mask)
            return self.proj(out[..., :hd].transpose(1, 2).reshape(Bw, N, C))
        total = self.position_bias().unsqueeze(0)  # (1, heads, N, N), broadcast over windows
        if mask is None:
            if bias is not None:
                total = total + bias
            out = attention(q, k, v, total, self.scale, reference)
        else:
            # The mask depends on the window index only: fold windows into the head axis, (B, nW*heads, N, .),
            # so position bias + mask stay one (1, nW*heads, N, N) tensor broadcast over the batch instead of
            # being copied B times. An extra bias is per image anyway and is added at full size.
            nW = mask.shape[0]
            B = Bw // nW
            total = (total + mask.unsqueeze(1).to(total.dtype)).reshape(1, nW * h, N, N)
            if bias is not None:
                total = (total.reshape(1, nW, h, N, N) + bias.reshape(B, nW, -1, N, N)).reshape(B, nW * h, N, N)
            fold = lambda t: t.reshape(B, nW * h, N, t.shape[-1])  # noqa: E731
            out = attention(fold(q), fold(k), fold(v), total, self.scale, reference).reshape(Bw, h, N, -1)
        if out.shape[-1] != hd:  # cut the factored bias's zero channels (only then: a slice costs a backward)
            out = out[..., :hd]
        return self.proj(out.transpose(1, 2).reshape(Bw, N, C))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pool -> 1x1 (C -> C/squeeze) -> ReLU -> 1x1 back -> sigmoid."""

    def __init__(self, dim: int, squeeze: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, dim // squeeze, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // squeeze, dim, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x)


class CAB(nn.Module):
    """Channel attention block: conv3x3 (C -> C/compress) -> GELU -> conv3x3 back -> channel attention."""

    def __init__(self, dim: int, compress: int, squeeze: int):
        super().__init__()
        if dim % compress or dim % squeeze:
            raise ConfigError(f"embed_dim {dim} must be divisible by compress {compress} and squeeze {squeeze}")
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim // compress, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(dim // compress, dim, 3, 1, 1),
            ChannelAttention(dim, squeeze),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class HAB(nn.Module):
    """Hybrid attention block (HAT):
    x = x + attn(LN x) + conv_scale * CAB(LN x);  x = x + MLP(LN x).  `shift` is 0 or window/2."""

    def __init__(
        self,
        dim: int,
        heads: int,
        window: int,
        shift: int,
        mlp_ratio: float = 2.0,
        compress: int = 3,
        squeeze: int = 30,
        conv_scale: float = 0.01,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if not 0 <= shift < window:
            raise ConfigError(f"shift {shift} must lie in [0, window {window})")
        self.window, self.shift, self.conv_scale = window, shift, conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.conv_block = CAB(dim, compress, squeeze)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(
        self,
        x: torch.Tensor,
        size: tuple[int, int],
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | FactoredBias | None = None,
        reference: bool = False,
    ) -> torch.Tensor:
        """x (B, H*W, C); `mask` is the shifted-window mask (used only when shift > 0); `bias` extra logits
        (a dense tensor or a FactoredBias, for the windows of this block's shift)."""
        H, W = size
        B, L, C = x.shape
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        conv_x = self.conv_block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(B, L, C)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(x, self.window)
        attn = self.attn(windows, mask if self.shift else None, bias, reference)
        x = window_reverse(attn, self.window, H, W)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + self.drop_path(x.reshape(B, L, C)) + self.conv_scale * conv_x
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OCAB(nn.Module):
    """Overlapping cross-attention block (HAT): queries from w x w windows, keys/values from
    overlapping ow x ow windows, ow = w + int(w * overlap), gathered with `unfold` and zero padding (ow - w)/2.
    Its own relative position table of (w + ow - 1)^2 x heads; no mask. Then proj + shortcut and an MLP."""

    def __init__(self, dim: int, window: int, overlap: float, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"embed_dim {dim} is not divisible by heads {heads}")
        self.dim, self.window, self.heads = dim, window, heads
        self.overlap_window = int(window * overlap) + window
        if (self.overlap_window - window) % 2:
            raise ConfigError(f"overlap {overlap} with window {window} gives an odd padding; pick an even w*overlap")
        self.scale = (dim // heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        table = (window + self.overlap_window - 1) ** 2
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table, heads))
        index = overlapping_relative_position_index(window, self.overlap_window)
        self.register_buffer("relative_position_index", index, persistent=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """(heads, w*w, ow*ow) relative position bias, contiguous."""
        n, m = self.window**2, self.overlap_window**2
        table = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return table.view(n, m, self.heads).permute(2, 0, 1).contiguous()

    def forward(self, x: torch.Tensor, size: tuple[int, int], reference: bool = False) -> torch.Tensor:
        H, W = size
        B, L, C = x.shape
        w, ow, h = self.window, self.overlap_window, self.heads
        hd, nH, nW = C // h, H // w, W // w
        shortcut = x
        qkv = self.qkv(self.norm1(x)).view(B, H, W, 3 * C)
        q, kv = qkv.split([C, 2 * C], dim=-1)  # one split: its backward is one cat, not two zero-filled slices
        # Each of q, k, v goes to its (windows, heads, tokens, head_dim) layout in a single copy, contiguous as
        # attention wants it; windows in row-major order (window_partition's, and unfold's below).
        q = q.view(B, nH, w, nW, w, h, hd).permute(0, 1, 3, 5, 2, 4, 6).reshape(B * nH * nW, h, w * w, hd)
        kv = F.unfold(kv.permute(0, 3, 1, 2), kernel_size=ow, stride=w, padding=(ow - w) // 2)  # (B, 2C*ow*ow, nW)
        k, v = kv.view(B, 2, h, hd, ow * ow, nH * nW).permute(1, 0, 5, 2, 4, 3).reshape(2, -1, h, ow * ow, hd)
        if not reference and _flex_applies(q):
            table, index = self.relative_position_bias_table, self.relative_position_index
            out = flex_biased_attention(q, k, v, table, index, self.scale)
        else:
            out = attention(q, k, v, self.position_bias().unsqueeze(0), self.scale, reference)
        # (B*nW, heads, w*w, hd) -> (B, H*W, C) in one copy (window_reverse and the head merge together)
        out = out.view(B, nH, nW, h, w, w, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, L, C)
        x = self.proj(out) + shortcut
        return x + self.mlp(self.norm2(x))


class RHAG(nn.Module):
    """Residual hybrid attention group (HAT): HABs (shift 0, w/2 alternating) -> OCAB -> conv3x3,
    plus the group input. `body` is everything but the residual, so DA-RHAG can modulate its input first."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        window: int,
        mlp_ratio: float = 2.0,
        compress: int = 3,
        squeeze: int = 30,
        overlap: float = 0.5,
        drop_path: Sequence[float] | float = 0.0,
    ):
        super().__init__()
        rates = [float(drop_path)] * depth if isinstance(drop_path, (int, float)) else list(drop_path)
        self.blocks = nn.ModuleList(
            HAB(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, compress, squeeze, 0.01, rates[i])
            for i in range(depth)
        )
        self.overlap_attn = OCAB(dim, window, overlap, heads, mlp_ratio)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def body(
        self,
        x: torch.Tensor,
        size: tuple[int, int],
        masks: dict[int, torch.Tensor],
        biases: dict[int, torch.Tensor | FactoredBias] | None = None,
        reference: bool = False,
    ) -> torch.Tensor:
        biases = biases or {}
        for blk in self.blocks:
            x = blk(x, size, masks.get(blk.shift), biases.get(blk.shift), reference)
        x = self.overlap_attn(x, size, reference)
        B, L, C = x.shape
        x = self.conv(x.transpose(1, 2).reshape(B, C, *size))
        return x.flatten(2).transpose(1, 2)

    def forward(self, x, size, masks, biases=None, reference=False):
        return x + self.body(x, size, masks, biases, reference)


# --------------------------------------------------------------------------------------------------
# the x4 network


def reflect_pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad (B, C, H, W) on the bottom/right to multiples of `multiple` (HAT's test-time padding).

    Reflection needs pad < side, so small images are padded in several reflections; a side of 1 pixel cannot be
    reflected at all and is replicated instead. Reflection is separable, so the axes are padded one at a time.
    """
    for axis in (-1, -2):
        while pad := (-x.shape[axis]) % multiple:
            side = x.shape[axis]
            step, mode = (min(pad, side - 1), "reflect") if side > 1 else (pad, "replicate")
            x = F.pad(x, (0, step, 0, 0) if axis == -1 else (0, 0, 0, step), mode=mode)
    return x


class Upsample(nn.Sequential):
    """Pixel-shuffle upsampler: log2(scale) steps of conv3x3 (C -> 4C) + PixelShuffle(2), or one x3 step."""

    def __init__(self, scale: int, num_feat: int):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(scale.bit_length() - 1):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ConfigError(f"upscale {scale} is not supported (use 2^n or 3)")
        super().__init__(*layers)


class HAT(nn.Module):
    """The HAT x4 network: mean shift, conv_first, LN, RHAGs, LN, conv_after_body + skip,
    conv_before_upsample (LeakyReLU), pixel shuffle, conv_last. Inputs are reflect-padded to a multiple of the
    window and the output is cropped back, so any input size works.

    `forward(lr, guides=None, reference=False)`: `guides` (one per group) let DA-RHAG modulate each group's
    input and add attention biases (savl.models.srnet).
    """

    def __init__(
        self,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        heads: Sequence[int] | int = 6,
        window: int = 16,
        mlp_ratio: float = 2.0,
        compress: int = 3,
        squeeze: int = 30,
        overlap: float = 0.5,
        upscale: int = 4,
        drop_path: float = 0.0,
        in_ch: int = 3,
        num_feat: int = 64,
    ):
        super().__init__()
        if window % 2:
            raise ConfigError(f"window {window} must be even (the shift is window/2)")
        depths = list(depths)
        heads = [heads] * len(depths) if isinstance(heads, int) else list(heads)
        if len(heads) != len(depths):
            raise ConfigError(f"heads has {len(heads)} entries but depths has {len(depths)} groups")
        self.window, self.upscale, self.in_ch = window, upscale, in_ch
        mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1) if in_ch == 3 else torch.zeros(1)
        self.register_buffer("rgb_mean", mean, persistent=False)
        self.conv_first = nn.Conv2d(in_ch, embed_dim, 3, 1, 1)
        self.patch_norm = nn.LayerNorm(embed_dim)
        # stochastic depth grows linearly with depth (plain Python, so the model can be built on the meta device)
        n = sum(depths)
        rates = [drop_path * i / (n - 1) if n > 1 else 0.0 for i in range(n)]
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.groups = nn.ModuleList(
            RHAG(embed_dim, d, h, window, mlp_ratio, compress, squeeze, overlap, rates[s : s + d])
            for d, h, s in zip(depths, heads, starts)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, in_ch, 3, 1, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # HAT's initialisation: truncated normal (std .02) for linear layers, unit LayerNorm.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def masks(self, H: int, W: int, device: torch.device) -> dict[int, torch.Tensor]:
        """Shifted-window masks for the padded size, one per shift used by the HABs."""
        shift = self.window // 2
        return {shift: shifted_window_mask(H, W, self.window, shift, device)}

    def deep_features(
        self,
        x: torch.Tensor,
        guides: Sequence[Guide | None] | None = None,
        reference: bool = False,
    ) -> torch.Tensor:
        """conv_first output (B, C, H, W) with H, W multiples of the window -> conv_after_body(...) + x."""
        B, C, H, W = x.shape
        size = (H, W)
        masks = self.masks(H, W, x.device)
        t = self.patch_norm(x.flatten(2).transpose(1, 2))
        for i, group in enumerate(self.groups):
            guide = guides[i] if guides is not None else None
            if guide is None:
                t = group(t, size, masks, None, reference)
            else:
                t_mod, biases = guide(t, size)
                t = t + group.body(t_mod, size, masks, biases, reference)
        t = self.norm(t)
        return self.conv_after_body(t.transpose(1, 2).reshape(B, C, H, W)) + x

    def forward(
        self, lr: torch.Tensor, guides: Sequence[Guide | None] | None = None, reference: bool = False
    ) -> torch.Tensor:
        if lr.dim() != 4 or lr.shape[1] != self.in_ch:
            raise ImageError(f"SR input must be (B, {self.in_ch}, H, W), got {tuple(lr.shape)}")
        H, W = lr.shape[-2:]
        mean = self.rgb_mean.to(lr.dtype)
        x = reflect_pad_to(lr - mean, self.window)
        x = self.conv_first(x)
        x = self.deep_features(x, guides, reference)
        x = self.tail(x)
        return x[..., : H * self.upscale, : W * self.upscale] + mean

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        """conv_before_upsample, pixel shuffles, conv_last: (B, C, H, W) features -> (B, in_ch, sH, sW).

        Without gradients, a map whose full-resolution features (num_feat x sH x sW floats) exceed
        TAIL_BAND_BYTES runs in horizontal bands with TAIL_HALO rows of context, written into one output: the
        tail's two largest tensors (the last convolution's input and the map before it) then exist one band at
        a time instead of for the whole image."""
        B, _, H, W = x.shape
        s = self.upscale
        full = B * self.conv_last.in_channels * H * s * W * s * x.element_size()
        n = -(-full // TAIL_BAND_BYTES)
        if torch.is_grad_enabled() or n < 2 or H < 2 * n:
            return self.conv_last(self.upsample(self.conv_before_upsample(x)))
        out = None
        for i in range(n):
            a, b = H * i // n, H * (i + 1) // n
            a0, b0 = max(a - TAIL_HALO, 0), min(b + TAIL_HALO, H)
            y = self.conv_last(self.upsample(self.conv_before_upsample(x[:, :, a0:b0])))
            if out is None:
                cl = y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
                fmt = torch.channels_last if cl else torch.contiguous_format
                out = torch.empty((B, y.shape[1], H * s, W * s), dtype=y.dtype, device=y.device, memory_format=fmt)
            out[:, :, a * s : b * s] = y[:, :, (a - a0) * s : (b - a0) * s]
        return out
