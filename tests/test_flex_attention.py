"""The FlexAttention switch of savl.models.hat: its score_mod (relative position table + shifted-window mask, DSCA
folded into q and k) equals the materialised formula and the SDPA path, checked on the CPU forward-only with
eager FlexAttention (its backward exists on CUDA only); on the CPU the switch leaves training on SDPA, bit for bit."""

import pytest
import torch

import savl.models.hat as hat
from savl.models.srnet import DARHAGNet, SRNetConfig

pytest.importorskip("torch.nn.attention.flex_attention")
# eager FlexAttention is the point here (a reference implementation); its advice to compile is for speed
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@pytest.fixture
def flex_on_cpu(monkeypatch):
    """Let the switch act on the CPU, eagerly (forward only): how the score_mod is checked without a GPU."""
    monkeypatch.setitem(hat._FLEX, "devices", ("cpu", "cuda"))
    monkeypatch.setitem(hat._FLEX, "compile", False)
    old = hat.set_flex_attention(True)
    yield
    hat.set_flex_attention(old)


@pytest.mark.parametrize("masked", [False, True])
def test_score_mod_equals_the_materialised_bias(masked):
    g = torch.Generator().manual_seed(0)
    window, heads, d, n_windows, batch = 4, 2, 8, 3, 2
    N = window * window
    q, k, v = (torch.randn(batch * n_windows, heads, N, d, generator=g) for _ in range(3))
    table = torch.randn((2 * window - 1) ** 2, heads, generator=g)
    index = hat.relative_position_index(window)
    mask = torch.where(torch.rand(n_windows, N, N, generator=g) > 0.6, hat.SHIFT_MASK_VALUE, 0.0) if masked else None
    with torch.no_grad():
        got = hat.flex_biased_attention(q, k, v, table, index, 0.35, mask, compiled=False)
    # the literal formula, window by window: bias_ij = table[index[i, j], head] + mask[window of row, i, j]
    bias = table[index.view(-1)].view(N, N, heads).permute(2, 0, 1)[None]
    if masked:
        bias = bias + mask.repeat(batch, 1, 1)[:, None]
    want = ((q @ k.transpose(-2, -1)) * 0.35 + bias).softmax(-1) @ v
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)


@pytest.mark.slow
def test_the_whole_network_through_flex_equals_sdpa(flex_on_cpu):
    torch.manual_seed(0)
    net = DARHAGNet(SRNetConfig.smoke()).eval()  # HABs with and without shift, OCAB, DSCA's factored bias
    with torch.no_grad():
        for p in net.parameters():  # non-zero DSCA and position terms, so every bias matters
            p.add_(0.05 * torch.randn_like(p))
    lr = torch.rand(2, 3, 12, 16)
    calls = []
    real = hat.flex_biased_attention
    with torch.no_grad():
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(hat, "flex_biased_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
            flex = net(lr)
        n_attention = sum(isinstance(m, (hat.WindowAttention, hat.OCAB)) for m in net.modules())
        assert len(calls) == n_attention  # every attention went through FlexAttention
        hat.set_flex_attention(False)
        sdpa = net(lr)
    torch.testing.assert_close(flex, sdpa, atol=1e-5, rtol=1e-5)


def test_on_the_cpu_the_switch_keeps_training_on_sdpa():
    torch.manual_seed(0)
    net = DARHAGNet(SRNetConfig.smoke())
    lr = torch.rand(1, 3, 8, 8)
    want = net(lr)
    want.square().mean().backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad()
    old = hat.set_flex_attention(True)
    try:
        got = net(lr)
        got.square().mean().backward()  # FlexAttention has no CPU backward: the fallback must be taken
    finally:
        hat.set_flex_attention(old)
    assert torch.equal(got, want)
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, [p for p in net.parameters() if p.grad is not None]))
