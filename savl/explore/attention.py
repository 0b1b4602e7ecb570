"""Chapter 5's explorer: DSCA's attention for one query pixel of one window, with and without the severity term.

The probe runs the SR network (savl.models.srnet.DARHAGNet with spatial guidance) on an LR image, captures what
enters the first block of a DA-RHAG group (a hybrid attention block with plain windows, shift 0), and recomputes
that block's attention for one window and one head:

    logits_ij = q_i . k_j / sqrt(d) + B_ij                     (content and relative position: "without")
    logits_ij - strength * gamma_h (s_h(i) - s_h(j))^2         ("with": DSCA's term, chapter 5's eq-dsca-bias)

with the block's own q, k and position bias and DSCA's own per-head severity s_h and strength gamma_h;
``strength`` = 1 is the network as it is, other values scale the term to show what a stronger or weaker
gamma would do. At strength 1 the "with" row is exactly what the network computes (the tests compare it with
the block's own attention output).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.patches import Rectangle

from savl.errors import ConfigError
from savl.explore.widgets import Choice, Explorer, Slider
from savl.models.dsca import GuidanceMaps
from savl.models.hat import reflect_pad_to, window_partition

#: Spatially varying degradations the explorer offers, name -> (Table 5 setting or MANet mode, HR cell side).
#: Table 5's own 64-pixel cells are 16 LR pixels, two windows of the book network: a window then lies inside
#: one cell. Cells of 16 HR pixels (4 LR pixels) put four degradations into one 8 x 8 window.
DEGRADATIONS = {
    "noise/blur/JPEG, 16 px cells": ("type", 16),
    "noise levels, 16 px cells": ("noise", 16),
    "blur levels, 16 px cells": ("blur", 16),
    "noise/blur/JPEG, 64 px cells (Table 5)": ("type", 64),
    "MANet mode 4 (Table 4)": ("manet-mode4", 0),
}


def spatially_varying_lr(hr: torch.Tensor, degradation: str, seed: int = 0) -> torch.Tensor:
    """The LR (1, 3, h, w) of ``hr`` (1, 3, H, W) under one of :data:`DEGRADATIONS` (a seeded draw)."""
    from savl.degrade import spatial
    from savl.degrade.protocols import get_protocol

    if degradation not in DEGRADATIONS:
        raise ConfigError(f"unknown degradation {degradation!r}; choose one of {', '.join(DEGRADATIONS)}")
    what, cell = DEGRADATIONS[degradation]
    g = torch.Generator().manual_seed(seed)
    if cell:
        return spatial.patchwise(hr, what, g, patch=cell).lr
    return get_protocol(what)(hr, g)[0]


class _Captured(Exception):
    """Raised by the forward pre-hook once the block's input is captured: the rest of the network is not run."""


def _block_input(net, lr: torch.Tensor, group: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(tokens (1, H*W, C), (H, W)) entering the first block of group ``group`` in a forward pass of ``net``."""
    block = net.sr.groups[group].blocks[0]
    seen: dict = {}

    def hook(_module, args):
        seen["x"], seen["size"] = args[0], tuple(args[1])
        raise _Captured

    handle = block.register_forward_pre_hook(hook)
    try:
        net(lr)
    except _Captured:
        pass
    finally:
        handle.remove()
    if "x" not in seen:
        raise ConfigError(f"group {group}'s first block never ran")
    return seen["x"], seen["size"]


@torch.no_grad()
def attention_probe(
    net,
    lr: torch.Tensor,
    window: tuple[int, int] = (0, 0),
    query: tuple[int, int] = (0, 0),
    head: int = 0,
    group: int = 0,
    strength: float = 1.0,
) -> dict:
    """One query's attention in one window of the first (unshifted) block of DA-RHAG group ``group``.

    ``lr`` (1, 3, h, w) in [0, 1]; ``window`` (row, column) in the window grid of the padded LR; ``query``
    (row, column) inside the window. Returns the probabilities without and with the severity term
    (``without``, ``with``, each (w, w)), the term's row for the query (``term``), the severity s_h in the window
    (``severity_window``) and on the whole padded LR (``severity``), ``gamma`` (the network's gamma_h),
    ``tv`` (total variation between the two rows), and where the window lies (``box``: top, left, side in LR
    pixels), with the network's ``output`` (the block's attention output for the window, a (w*w, C) tensor, as
    a check: the tests compare it with the block itself).
    """
    cfg = net.config
    if getattr(net, "dsca", None) is None or not cfg.spatial_guidance:
        raise ConfigError("attention_probe needs a DARHAGNet with spatial guidance (DSCA's severity term)")
    if lr.dim() != 4 or lr.shape[0] != 1:
        raise ConfigError(f"attention_probe takes one LR image (1, 3, h, w), got {tuple(lr.shape)}")
    w, heads = cfg.window, cfg.heads
    if not 0 <= group < len(net.sr.groups):
        raise ConfigError(f"group {group} does not exist: the network has {len(net.sr.groups)}")
    if not 0 <= head < heads:
        raise ConfigError(f"head {head} does not exist: the network has {heads}")
    if not all(0 <= v < w for v in query):
        raise ConfigError(f"query {query} lies outside the {w} x {w} window")
    device = next(net.parameters()).device
    net = net.eval()
    lr = lr.to(device)
    x, (H, W) = _block_input(net, lr, group)
    rows, cols = H // w, W // w
    if not (0 <= window[0] < rows and 0 <= window[1] < cols):
        raise ConfigError(f"window {window} lies outside the {rows} x {cols} grid of windows")
    index = window[0] * cols + window[1]
    block, dsca = net.sr.groups[group].blocks[0], net.dsca[group]
    attn = block.attn
    tokens = window_partition(block.norm1(x).view(1, H, W, -1), w)[index : index + 1]  # (1, N, C)
    N, C = tokens.shape[1], tokens.shape[2]
    hd = C // heads
    q, k, v = attn.qkv(tokens).view(1, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
    logits = (q * attn.scale) @ k.transpose(-2, -1) + attn.position_bias()[None]  # (1, heads, N, N)
    maps = GuidanceMaps.from_posterior(net.posterior(lr), tuple(lr.shape[-2:]), w)
    severity = dsca.head_severity(maps)  # (1, heads, H, W)
    term = dsca.attention_bias(severity, 0)[index : index + 1]  # (1, heads, N, N): -gamma (s_i - s_j)^2
    with_term = logits + term
    output = attn.proj((with_term.softmax(-1) @ v).transpose(1, 2).reshape(1, N, C))[0]
    qi = query[0] * w + query[1]
    p_without = logits[0, head, qi].softmax(-1)
    p_with = (logits[0, head, qi] + strength * term[0, head, qi]).softmax(-1)
    sev_win = dsca.severity_windows(severity, 0)[index, head]
    as_map = lambda t: t.reshape(w, w).float().cpu().numpy()  # noqa: E731
    return {
        "lr": reflect_pad_to(lr, w)[0].float().cpu(),
        "valid": tuple(lr.shape[-2:]),
        "severity": severity[0, head].float().cpu().numpy(),
        "severity_window": as_map(sev_win),
        "without": as_map(p_without),
        "with": as_map(p_with),
        "term": as_map(strength * term[0, head, qi]),
        "gamma": float(dsca.gamma[head]),
        "strength": float(strength),
        "tv": float(0.5 * (p_with - p_without).abs().sum()),
        "box": (window[0] * w, window[1] * w, w),
        "query": tuple(query),
        "head": head,
        "group": group,
        "output": output,
    }


def draw_attention(result: dict, axes) -> None:
    """Four panels: the padded LR with the window (box) and query (star); s_h in the window; the query's
    attention without and with the severity term (one colour scale for both)."""
    top, left, side = result["box"]
    qy, qx = result["query"]
    ax = axes[0]
    img = result["lr"].permute(1, 2, 0).clamp(0, 1).numpy()
    # the window with one window of context on each side (clipped at the borders), pixels as they are
    y0, x0 = max(0, top - side), max(0, left - side)
    y1, x1 = min(img.shape[0], top + 2 * side), min(img.shape[1], left + 2 * side)
    ax.imshow(img[y0:y1, x0:x1], interpolation="nearest", extent=(x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5))
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, ec="cyan", lw=1.5))
    ax.plot(left + qx, top + qy, "r*", ms=8)
    ax.set_title(f"LR, window at ({top}, {left})", fontsize=9)
    im = axes[1].imshow(result["severity_window"], cmap="magma", vmin=-1, vmax=1)
    axes[1].set_title(f"severity $s_h$, head {result['head']}", fontsize=9)
    axes[1].figure.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03)
    vmax = max(result["without"].max(), result["with"].max())
    titles = (
        "attention without the term",
        f"with the term ({result['strength']:g} × $\\gamma$, $\\gamma$ = {result['gamma']:.2f})\n"
        f"TV to left: {result['tv']:.3f}",
    )
    for ax, key, title in zip(axes[2:4], ("without", "with"), titles):
        ax.imshow(result[key], cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    for ax in axes[1:4]:
        ax.plot(qx, qy, "r*", ms=8)
    for ax in axes[:4]:
        ax.set_xticks([])
        ax.set_yticks([])


def dsca_attention_explorer(
    net,
    hr: torch.Tensor,
    degradations: Sequence[str] = tuple(DEGRADATIONS),
    seed: int = 0,
    group: int = 0,
) -> Explorer:
    """Controls: the spatially varying degradation (names of :data:`DEGRADATIONS`) of the HR photo ``hr``
    (3, H, W) or (1, 3, H, W), the window (row, column), the query pixel (row, column), the head and the strength
    of the term (1 = the network's own gamma). The LR of each degradation is made once (seeded) and kept.

    Example::

        net = savl.zoo.load("darhag-book")
        ex = dsca_attention_explorer(net, hr)
        fig = ex.view(degradation="noise levels, 16 px cells", query_row=3, query_col=5, strength=4.0)
        twin = static_twin(ex, [{}, {"strength": 4.0}])
        live = interactive(ex)                    # JupyterLab: display(live.box)
    """
    hr = hr if hr.dim() == 4 else hr[None]
    cfg = net.config
    w, scale = cfg.window, cfg.upscale
    h_lr, w_lr = -(-hr.shape[-2] // scale), -(-hr.shape[-1] // scale)
    rows, cols = -(-h_lr // w), -(-w_lr // w)
    cache: dict[str, torch.Tensor] = {}

    def lr_of(degradation: str) -> torch.Tensor:
        if degradation not in cache:
            cache[degradation] = spatially_varying_lr(hr, degradation, seed)
        return cache[degradation]

    def compute(degradation, window_row, window_col, query_row, query_col, head, strength):
        result = attention_probe(
            net, lr_of(degradation), (window_row, window_col), (query_row, query_col), head, group, strength
        )
        result["degradation"] = degradation
        return result

    def draw(result, axes):
        draw_attention(result, axes)
        axes[0].set_title(f"{result['degradation']}\nwindow ({result['box'][0]}, {result['box'][1]})", fontsize=8)

    return Explorer(
        title="DSCA attention for one query pixel",
        controls={
            "degradation": Choice(tuple(degradations), degradations[0], label="degradation"),
            "window_row": Slider(0, rows - 1, 0, integer=True, label="window row"),
            "window_col": Slider(0, cols - 1, 0, integer=True, label="window column"),
            "query_row": Slider(0, w - 1, w // 2, integer=True, label="query row"),
            "query_col": Slider(0, w - 1, w // 2, integer=True, label="query column"),
            "head": Slider(0, cfg.heads - 1, 0, integer=True, label="head"),
            "strength": Slider(0.0, 16.0, 1.0, step=0.25, label="strength × γ"),
        },
        compute=compute,
        draw=draw,
        panels=4,
        panel_size=(2.3, 2.5),
        extra={"lr_of": lr_of},
    )


def window_stats(result: dict) -> dict[str, float]:
    """How much attention the query keeps on keys of similar severity (|s_i - s_j| < 0.25), without and with the
    term: the number the chapter quotes beside the picture."""
    s = result["severity_window"]
    qy, qx = result["query"]
    near = np.abs(s - s[qy, qx]) < 0.25
    return {"near_without": float(result["without"][near].sum()), "near_with": float(result["with"][near].sum())}
