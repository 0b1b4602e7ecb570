"""HAT backbone (savl/models/hat.py) against hand-built references."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from savl.errors import ConfigError
from savl.models.hat import (
    HAB,
    HAT,
    OCAB,
    SHIFT_MASK_VALUE,
    DropPath,
    FactoredBias,
    WindowAttention,
    overlapping_relative_position_index,
    reflect_pad_to,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


def tiny_hat(**kw):
    args = dict(embed_dim=24, depths=(2, 2), heads=2, window=4, mlp_ratio=2, compress=3, squeeze=4, overlap=0.5)
    args.update(kw)
    return HAT(**args)


def test_window_partition_is_exact_inverse_and_row_major(generator):
    x = torch.randn(2, 8, 12, 5, generator=generator)
    w = window_partition(x, 4)
    assert w.shape == (2 * 2 * 3, 16, 5)
    # window k of image b is the (k // 3, k % 3) tile, pixels row-major inside
    np.testing.assert_array_equal(w[1 * 6 + 5].numpy(), x[1, 4:8, 8:12].reshape(16, 5).numpy())
    assert torch.equal(window_reverse(w, 4, 8, 12), x)


@pytest.mark.parametrize("window", [2, 4, 7])
def test_relative_position_index_covers_table_and_is_antisymmetric(window):
    idx = relative_position_index(window)
    size = (2 * window - 1) ** 2
    assert sorted(set(idx.flatten().tolist())) == list(range(size))
    # offset(i, j) = -offset(j, i): the two entries are mirror images about the table centre
    assert torch.equal(idx + idx.T, torch.full_like(idx, size - 1))
    assert torch.equal(idx.diagonal(), torch.full((window * window,), size // 2))
    # same index <=> same geometric offset (checked pair by pair against coordinates)
    coords = [(i // window, i % window) for i in range(window * window)]
    seen = {}
    for i, j in itertools.product(range(window * window), repeat=2):
        off = (coords[i][0] - coords[j][0], coords[i][1] - coords[j][1])
        assert seen.setdefault(int(idx[i, j]), off) == off


def test_relative_position_index_hand_values():
    idx = relative_position_index(2)  # 3x3 table; pixels (0,0),(0,1),(1,0),(1,1)
    # (0,0) vs (0,1): offset (0,-1) -> row 1, col 0 -> 3;  (1,1) vs (0,0): offset (1,1) -> row 2, col 2 -> 8
    assert idx[0, 1] == 3 and idx[3, 0] == 8 and idx[0, 3] == 0


def test_overlapping_index_covers_table_and_matches_offsets():
    w, ow = 4, 6
    pad = (ow - w) // 2
    idx = overlapping_relative_position_index(w, ow)
    assert idx.shape == (w * w, ow * ow)
    assert sorted(set(idx.flatten().tolist())) == list(range((w + ow - 1) ** 2))
    seen = {}
    for i, j in itertools.product(range(w * w), range(ow * ow)):
        off = (i // w - (j // ow - pad), i % w - (j % ow - pad))
        assert seen.setdefault(int(idx[i, j]), off) == off


@pytest.mark.parametrize("H,W,window", [(8, 8, 4), (8, 12, 4), (12, 4, 4), (16, 24, 8), (8, 16, 8)])
def test_shifted_window_mask_against_wraparound_labels(H, W, window):
    shift = window // 2
    mask = shifted_window_mask(H, W, window, shift)
    # Independent reference: after rolling by -shift, pixel (y, x) came from ((y+s) mod H, (x+s) mod W);
    # two pixels of one window were neighbours iff they wrapped around on the same axes.
    ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    label = (ys + shift >= H).astype(int) * 2 + (xs + shift >= W).astype(int)
    wins = window_partition(torch.from_numpy(label)[None, ..., None].float(), window)[..., 0].numpy()
    ref = np.where(wins[:, :, None] != wins[:, None, :], -100.0, 0.0)
    np.testing.assert_array_equal(mask.numpy(), ref)
    assert set(np.unique(mask.numpy())) <= {0.0, SHIFT_MASK_VALUE}
    # windows away from the bottom/right edge are not masked at all
    if H > window and W > window:
        assert mask[0].abs().sum() == 0


def test_shifted_mask_blocks_wraparound_in_hab(generator):
    torch.manual_seed(0)
    blk = HAB(8, 2, 4, shift=2, compress=2, squeeze=2).eval()
    blk.conv_scale = 0.0  # the CAB's global pooling would otherwise couple every pixel
    H = W = 8
    x = torch.randn(1, H * W, 8, generator=generator)
    y = x.clone()
    # the bottom-right pixel; after the roll it shares a window with the top-left pixel
    y[0, -1] += torch.randn(8, generator=generator)
    mask = shifted_window_mask(H, W, 4, 2)
    with torch.no_grad():
        a, b = blk(x, (H, W), mask), blk(y, (H, W), mask)
        c, d = blk(x, (H, W), torch.zeros_like(mask)), blk(y, (H, W), torch.zeros_like(mask))
    assert torch.allclose(a[0, 0], b[0, 0], atol=1e-6)  # masked: no leak across the wrap
    assert (c[0, 0] - d[0, 0]).abs().max() > 1e-4  # unmasked: it leaks


@pytest.mark.parametrize("with_mask,with_bias", [(False, False), (True, False), (False, True), (True, True)])
def test_window_attention_sdpa_equals_reference(generator, with_mask, with_bias):
    torch.manual_seed(0)
    attn = WindowAttention(16, 4, 4)
    B, H, W = 2, 8, 12
    nW = (H // 4) * (W // 4)
    x = torch.randn(B * nW, 16, 16, generator=generator)
    mask = shifted_window_mask(H, W, 4, 2) if with_mask else None
    bias = torch.randn(B * nW, 4, 16, 16, generator=generator) if with_bias else None
    fast = attn(x, mask, bias)
    ref = attn(x, mask, bias, reference=True)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("reference", [False, True])
def test_window_attention_matches_explicit_per_window_formula(generator, masked, reference):
    # B = 2 images of 4 x 4 pixels, window 2 -> nW = 4 windows each; loop window by window and head by head.
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, 2)
    B, nW, N = 2, 4, 4
    x = torch.randn(B * nW, N, 8, generator=generator)
    mask = shifted_window_mask(4, 4, 2, 1) if masked else None
    bias = torch.randn(B * nW, 2, N, N, generator=generator) if masked else None
    with torch.no_grad():
        out = attn(x, mask, bias, reference=reference)
        q, k, v = attn.qkv(x).chunk(3, dim=-1)
        index = relative_position_index(2)
        ref = torch.zeros(B * nW, N, 8)
        for bw in range(B * nW):
            for h in range(2):
                sl = slice(4 * h, 4 * h + 4)
                logits = q[bw, :, sl] @ k[bw, :, sl].T / 2.0  # head_dim 4 -> scale 1/2
                logits = logits + attn.relative_position_bias_table[index, h]
                if masked:
                    logits = logits + mask[bw % nW] + bias[bw, h]
                ref[bw, :, sl] = torch.softmax(logits, -1) @ v[bw, :, sl]
        ref = attn.proj(ref)
    if masked:
        assert mask.abs().sum() > 0
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_ocab_sdpa_equals_reference_and_naive_neighbourhoods(generator):
    torch.manual_seed(0)
    dim, w, H, W = 8, 4, 8, 12
    blk = OCAB(dim, w, 0.5, heads=2)
    assert blk.overlap_window == 6
    x = torch.randn(1, H * W, dim, generator=generator)
    fast, ref = blk(x, (H, W)), blk(x, (H, W), reference=True)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    # naive reference: each query window attends to the 6x6 zero-padded neighbourhood around it
    qkv = blk.qkv(blk.norm1(x)).view(H, W, 3, 2, 4)
    kv = F.pad(qkv[:, :, 1:].permute(1, 2, 3, 4, 0), (1, 1, 0, 0, 0, 0, 0, 0, 1, 1)).permute(4, 0, 1, 2, 3)
    kv = kv.reshape(H + 2, W + 2, 2, 2, 4)  # rows, cols, k/v, head, dim
    bias = blk.position_bias()
    out = torch.zeros(H, W, 2, 4)
    for wy, wx in itertools.product(range(H // w), range(W // w)):
        q = qkv[wy * w : wy * w + w, wx * w : wx * w + w, 0].reshape(w * w, 2, 4)
        nb = kv[wy * w : wy * w + 6, wx * w : wx * w + 6].reshape(36, 2, 2, 4)
        for h in range(2):
            p = torch.softmax(q[:, h] @ nb[:, 0, h].T / 2.0 + bias[h], -1)
            out[wy * w : wy * w + w, wx * w : wx * w + w, h] = (p @ nb[:, 1, h]).view(w, w, 4)
    y = blk.proj(out.reshape(1, H * W, dim)) + x
    y = y + blk.mlp(blk.norm2(y))
    torch.testing.assert_close(fast, y, atol=1e-5, rtol=1e-5)


def test_hat_sdpa_forward_equals_reference_forward(generator):
    torch.manual_seed(0)
    model = tiny_hat().eval()
    lr = torch.rand(2, 3, 12, 16, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(lr), model(lr, reference=True), atol=1e-5, rtol=1e-5)


def test_hat_odd_sizes_are_padded_and_cropped(generator):
    torch.manual_seed(0)
    model = tiny_hat().eval()
    lr = torch.rand(1, 3, 37, 53, generator=generator)
    with torch.no_grad():
        sr = model(lr)
        padded = F.pad(lr, (0, 3, 0, 3), mode="reflect")  # 40 x 56, multiples of the window 4
        sr_padded = model(padded)
    assert sr.shape == (1, 3, 148, 212)
    torch.testing.assert_close(sr, sr_padded[..., :148, :212])


def test_reflect_pad_small_inputs_repeat_reflection():
    x = torch.arange(3.0).view(1, 1, 1, 3).expand(1, 1, 2, 3)
    y = reflect_pad_to(x, 8)
    assert y.shape[-2:] == (8, 8)
    # reflect of [0,1,2] -> [0,1,2,1,0] -> [0,1,2,1,0,1,2,1]
    assert y[0, 0, 0].tolist() == [0, 1, 2, 1, 0, 1, 2, 1]


def test_reflect_pad_one_pixel_sides_fall_back_to_replicate():
    # A side of 1 pixel cannot be reflected (F.pad needs pad < side); it is replicated, and padding terminates.
    dot = torch.full((1, 2, 1, 1), 0.3)
    torch.testing.assert_close(reflect_pad_to(dot, 4), torch.full((1, 2, 4, 4), 0.3))
    row = torch.arange(3.0).view(1, 1, 1, 3)  # H = 1: replicate down, reflect across
    y = reflect_pad_to(row, 8)
    assert y.shape[-2:] == (8, 8)
    ref_row = torch.tensor([0.0, 1, 2, 1, 0, 1, 2, 1])
    torch.testing.assert_close(y[0, 0], ref_row.expand(8, 8))
    col = row.transpose(-1, -2)  # W = 1
    torch.testing.assert_close(reflect_pad_to(col, 8)[0, 0], ref_row[:, None].expand(8, 8))


def test_hat_super_resolves_one_pixel_images(generator):
    torch.manual_seed(0)
    model = tiny_hat().eval()
    with torch.no_grad():
        for h, w in [(1, 1), (1, 5), (6, 1)]:
            assert model(torch.rand(1, 3, h, w, generator=generator)).shape == (1, 3, 4 * h, 4 * w)


def test_every_attention_call_gets_contiguous_tensors(generator, monkeypatch):
    # Strided q/k/v send SDPA down a slower path; OCAB's keys/values at batch 1 used to be strided views.
    import savl.models.hat as hat

    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append(all(t.is_contiguous() for t in (q, k, v) if t is not None))
        seen.append(attn_mask is None or attn_mask.is_contiguous())
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(hat.F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    model = tiny_hat().eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8, generator=generator))
        OCAB(8, 4, 0.5, heads=2)(torch.randn(1, 64, 8, generator=generator), (8, 8))
    assert len(seen) > 0 and all(seen)


@pytest.mark.parametrize("masked", [False, True])
def test_factored_bias_is_folded_into_q_and_k(generator, masked):
    # left @ right^T added to the logits, whether folded into q/k (SDPA path) or materialised (reference).
    torch.manual_seed(0)
    attn = WindowAttention(16, 4, 4)
    B, H, W = 2, 8, 12
    nW = (H // 4) * (W // 4)
    x = torch.randn(B * nW, 16, 16, generator=generator)
    mask = shifted_window_mask(H, W, 4, 2) if masked else None
    fb = FactoredBias(*(torch.randn(B * nW, 4, 16, 3, generator=generator) for _ in range(2)))
    with torch.no_grad():
        folded = attn(x, mask, fb)
        dense = attn(x, mask, fb.left @ fb.right.transpose(-1, -2), reference=True)
        ref = attn(x, mask, fb, reference=True)
        plain = attn(x, mask, None)
    torch.testing.assert_close(folded, dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ref, dense, atol=1e-6, rtol=1e-6)
    assert (folded - plain).abs().max() > 1e-3


def test_hat_parameter_counts_match_hat_paper():
    # HAT paper, x4: HAT-S 9.6 M, HAT 20.8 M parameters.
    with torch.device("meta"):
        hat_s = HAT(144, (6,) * 6, 6, 16, 2, 24, 24, 0.5)
        hat = HAT(180, (6,) * 6, 6, 16, 2, 3, 30, 0.5)
    assert round(sum(p.numel() for p in hat_s.parameters()) / 1e6, 1) == 9.6
    assert round(sum(p.numel() for p in hat.parameters()) / 1e6, 1) == 20.8


def test_hat_gradients_and_bad_config(generator):
    torch.manual_seed(0)
    model = tiny_hat(drop_path=0.1).train()
    lr = torch.rand(2, 3, 8, 8, generator=generator)
    model(lr).abs().mean().backward()
    assert model.groups[0].blocks[1].attn.relative_position_bias_table.grad.abs().sum() > 0
    with pytest.raises(ConfigError):
        tiny_hat(embed_dim=25)
    with pytest.raises(ConfigError):
        tiny_hat(window=5)


def test_drop_path_is_identity_in_eval_and_unbiased_in_train(generator):
    dp = DropPath(0.5)
    x = torch.ones(4000, 3)
    assert torch.equal(dp.eval()(x), x)
    torch.manual_seed(0)
    y = dp.train()(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert abs(y.mean().item() - 1.0) < 0.05


def test_training_attention_skips_sdpa_math_path_with_equal_values_and_gradients(generator, monkeypatch):
    # On the CPU a bias that needs a gradient (the position table in training) would send SDPA down its math
    # path (slow NaN-safe softmax); the explicit form must give the reference path's outputs and gradients.
    import savl.models.hat as hat

    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(*a, **kw):
        calls.append(kw.get("attn_mask") is not None and kw["attn_mask"].requires_grad)
        return sdpa(*a, **kw)

    monkeypatch.setattr(hat.F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    model = tiny_hat().train()
    lr = torch.rand(2, 3, 8, 12, generator=generator)
    target = torch.rand(2, 3, 32, 48, generator=generator)
    grads = []
    for reference in (False, True):
        model.zero_grad(set_to_none=True)
        out = model(lr, reference=reference)
        F.l1_loss(out, target).backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    assert not any(calls)  # no SDPA call with a mask that needs a gradient
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # inference still runs SDPA (its flash kernel takes a mask without a gradient)
        model.eval()(lr)
    assert len(calls) > 0


def test_ocab_layout_matches_window_partition_of_per_head_tensors(generator, monkeypatch):
    # OCAB builds q, k, v in their (windows, heads, tokens, head_dim) layout in one copy each: the queries must
    # be window_partition's windows split into heads (keys, values and the output are pinned by the naive
    # neighbourhood test above).
    torch.manual_seed(0)
    dim, w, H, W, heads = 12, 4, 8, 12, 3
    blk = OCAB(dim, w, 0.5, heads=heads)
    x = torch.randn(2, H * W, dim, generator=generator)
    seen = {}

    def capture(q, k, v, bias, scale, reference):
        seen["q"] = q
        return q  # identity on the queries: OCAB's output is then proj(q put back) + x, before the MLP

    import savl.models.hat as hat

    monkeypatch.setattr(hat, "attention", capture)
    with torch.no_grad():
        blk(x, (H, W))
    with torch.no_grad():
        qkv = blk.qkv(blk.norm1(x)).view(2, H, W, 3 * dim)
        ref_q = window_partition(qkv[..., :dim].contiguous(), w).view(-1, w * w, heads, dim // heads).transpose(1, 2)
    assert seen["q"].is_contiguous()
    torch.testing.assert_close(seen["q"], ref_q, atol=0, rtol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_banded_tail_equals_the_whole_tail(generator, monkeypatch, channels_last):
    # Without gradients a large map's upsampling tail runs in bands with TAIL_HALO rows of context; every output
    # row must be the one the whole-map tail computes (the halo covers the four 3x3 convolutions).
    import savl.models.hat as hat

    torch.manual_seed(0)
    model = tiny_hat().eval()
    lr = torch.rand(1, 3, 24, 20, generator=generator)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        lr = lr.contiguous(memory_format=torch.channels_last)
    calls = []
    model.conv_last.register_forward_hook(lambda m, i, o: calls.append(o.shape[-2]))
    with torch.no_grad():
        whole = model(lr)
        assert calls == [96]
        monkeypatch.setattr(hat, "TAIL_BAND_BYTES", 64 * 96 * 80 * 4 // 4)  # a quarter of the 4x map: 4 bands
        banded = model(lr)
    assert len(calls) == 5 and max(calls[1:]) < 96
    torch.testing.assert_close(banded, whole, atol=1e-6, rtol=1e-6)
    out = model(lr)  # with gradients: one pass
    assert len(calls) == 6 and calls[-1] == 96
    torch.testing.assert_close(out.detach(), whole, atol=1e-6, rtol=1e-6)
