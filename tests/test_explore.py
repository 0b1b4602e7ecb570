"""savl.explore: the explorer pattern (controls checked, nothing drawn before a control moves, one static grid
drawn by the same functions) and each chapter's compute function against an independent reference: closed-form
Gaussian information and scipy's entropies (chapter 2), the network's own attention (chapter 5), Eq. 15 and
MATLAB bicubic computed here (chapters 4 and 8)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy import integrate, stats  # noqa: E402

from savl.errors import ConfigError, ImageError  # noqa: E402
from savl.explore import (  # noqa: E402
    MAX_WIDTH,
    Choice,
    Explorer,
    Slider,
    Text,
    bounds,  # noqa: E402
    interactive,
    static_twin,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------------------ the pattern
def _toy(calls: list) -> Explorer:
    def compute(a, n, name, path):
        if path == "bad":
            raise ImageError("bad: no such file")
        calls.append((a, n, name, path))
        return {"a": a, "n": n, "name": name}

    def draw(result, axes):
        axes[0].plot([0, 1], [0, result["a"]])
        axes[1].set_title(f"{result['name']} {result['n']}")

    return Explorer(
        title="toy",
        controls={
            "a": Slider(0.0, 2.0, 1.0),
            "n": Slider(1, 9, 3, integer=True),
            "name": Choice(("x", "y"), "x"),
            "path": Text(""),
        },
        compute=compute,
        draw=draw,
        panels=2,
        panel_size=(5.0, 3.0),
    )


def test_values_are_checked_against_their_controls():
    ex = _toy([])
    assert ex.values() == {"a": 1.0, "n": 3, "name": "x", "path": ""}
    assert ex.values(n=4.0, path="  p.png ")["n"] == 4 and ex.values(path=" p.png ")["path"] == "p.png"
    with pytest.raises(ConfigError, match="unknown control"):
        ex.values(b=1)
    with pytest.raises(ConfigError, match="outside"):
        ex.values(a=3.0)
    with pytest.raises(ConfigError, match="whole number"):
        ex.values(n=2.5)
    with pytest.raises(ConfigError, match="not one of"):
        ex.values(name="z")
    with pytest.raises(ConfigError, match="outside"):
        Slider(0, 1, 2)


def test_static_twin_draws_one_row_per_setting_with_the_same_functions():
    calls: list = []
    ex = _toy(calls)
    fig = static_twin(ex, [{}, {"a": 2.0, "name": "y"}, {"n": 7}])
    axes = np.array(fig.axes).reshape(3, 2)
    assert [c[:3] for c in calls] == [(1.0, 3, "x"), (2.0, 3, "y"), (1.0, 7, "x")]
    assert [ax.get_title() for ax in axes[:, 1]] == ["x 3", "y 3", "x 7"]
    assert axes[1, 0].get_lines()[0].get_ydata()[1] == 2.0
    # two 5-inch panels would be 10 inches: scaled to the column
    assert fig.get_size_inches()[0] <= MAX_WIDTH + 1e-9
    with pytest.raises(ConfigError, match="at least one"):
        static_twin(ex, [])


def test_interactive_draws_nothing_until_a_control_moves():
    pytest.importorskip("ipywidgets")
    import ipywidgets as widgets

    calls: list = []
    live = interactive(_toy(calls), a=0.5)
    assert live.draws == 0 and calls == []  # a headless run never waits on the Output widget
    assert isinstance(live.controls["n"], widgets.IntSlider) and isinstance(live.controls["name"], widgets.Dropdown)
    assert isinstance(live.controls["a"], widgets.FloatSlider) and live.controls["a"].value == 0.5
    assert isinstance(live.controls["path"], widgets.Text)
    assert not live.controls["a"].continuous_update  # a model runs once per move, on release
    live.controls["n"].value = 5
    assert live.draws == 1 and live.last_values == {"a": 0.5, "n": 5, "name": "x", "path": ""}
    live.controls["name"].value = "y"
    assert live.draws == 2 and calls[-1] == (0.5, 5, "y", "")
    live.controls["path"].value = "bad"  # a library error is reported in the output, not raised
    assert live.draws == 2 and live.last_error == "bad: no such file"


def test_log_slider_becomes_a_log_widget():
    pytest.importorskip("ipywidgets")
    import ipywidgets as widgets

    live = interactive(bounds.bounds_explorer(n_draws=100))
    assert isinstance(live.controls["ref_var"], widgets.FloatLogSlider)
    assert live.controls["ref_var"].value == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ chapter 2
def _mi_from_entropies(rho: float, d: int) -> float:
    """I(y; r) = H(y) + H(r) - H(y, r) from scipy's Gaussian entropies of the 2d-dimensional joint."""
    eye = np.eye(d)
    joint = np.block([[eye, rho * eye], [rho * eye, eye]])
    h = stats.multivariate_normal(np.zeros(d), eye).entropy()
    return 2 * h - stats.multivariate_normal(np.zeros(2 * d), joint).entropy()


@pytest.mark.parametrize("rho,d", [(0.0, 1), (0.3, 2), (0.8, 8), (0.97, 5)])
def test_gaussian_mi_matches_scipy_entropies(rho, d):
    assert bounds.gaussian_mi(rho, d) == pytest.approx(_mi_from_entropies(rho, d), abs=1e-9)


@pytest.mark.parametrize("rho,d,ref_var", [(0.5, 3, 1.0), (0.8, 8, 4.0), (0.9, 2, 0.3)])
def test_vib_upper_bound_is_mi_plus_the_aggregate_kl(rho, d, ref_var):
    # Eq. 9: E KL = I + KL(q(r) || p'), with the aggregate posterior q(r) = N(0, I) here
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    aggregate = torch.distributions.Normal(f64(0.0), f64(1.0))
    ref = torch.distributions.Normal(f64(0.0), f64(math.sqrt(ref_var)))
    gap = d * float(torch.distributions.kl_divergence(aggregate, ref))
    upper = bounds.vib_upper_bound(rho, d, ref_var)
    assert upper == pytest.approx(_mi_from_entropies(rho, d) + gap, abs=1e-9)
    assert upper >= bounds.gaussian_mi(rho, d) - 1e-12


@pytest.mark.parametrize("rho,alpha,tau2", [(0.6, 0.6, 0.64), (0.6, 0.6, 2.0), (0.8, 0.3, 0.5), (0.2, 1.0, 1.0)])
def test_ba_lower_bound_is_mi_minus_the_critics_expected_kl(rho, alpha, tau2):
    # Eq. 10: I - bound = E_r KL(p(y | r) || critic), integrated numerically over r ~ N(0, 1), one dimension
    def kl_at(r):
        p = stats.norm(rho * r, math.sqrt(1 - rho**2))
        q = stats.norm(alpha * r, math.sqrt(tau2))
        inner, _ = integrate.quad(lambda y: p.pdf(y) * (p.logpdf(y) - q.logpdf(y)), -12, 12, limit=200)
        return inner

    gap, _ = integrate.quad(lambda r: stats.norm.pdf(r) * kl_at(r), -9, 9, limit=200)
    d = 3
    lower = bounds.ba_lower_bound(rho, d, alpha, tau2)
    assert lower == pytest.approx(bounds.gaussian_mi(rho, d) - d * gap, abs=1e-6)
    assert lower <= bounds.gaussian_mi(rho, d) + 1e-12


def test_bounds_are_tight_at_the_aggregate_posterior_and_the_true_critic():
    for rho in (0.1, 0.7, 0.95):
        exact = bounds.gaussian_mi(rho, 6)
        assert bounds.vib_upper_bound(rho, 6, 1.0) == pytest.approx(exact, abs=1e-12)
        assert bounds.ba_lower_bound(rho, 6, rho, 1 - rho**2) == pytest.approx(exact, abs=1e-12)
    with pytest.raises(ConfigError, match="rho"):
        bounds.gaussian_mi(1.0, 2)


def test_sampled_terms_average_to_the_closed_forms():
    view = bounds.bounds_view(0.85, 8, ref_var=2.5, critic_scale=0.6, n_draws=20_000, seed=3)
    assert abs(view["upper_mc"] - view["upper"]) < 5 * view["upper_se"]
    assert abs(view["lower_mc"] - view["lower"]) < 5 * view["lower_se"]
    assert np.all(view["lower_curve"] <= view["exact_curve"] + 1e-12)
    assert np.all(view["exact_curve"] <= view["upper_curve"] + 1e-12)
    assert view["upper"] == pytest.approx(bounds.vib_upper_bound(0.85, 8, 2.5))
    assert view["lower"] == pytest.approx(bounds.ba_lower_bound(0.85, 8, 0.85, 0.6 * (1 - 0.85**2)))


def test_bounds_view_draws_the_curves_and_the_samples():
    ex = bounds.bounds_explorer(n_draws=500)
    fig = ex.view(rho=0.6, d=4)
    curve_ax, hist_ax = fig.axes[:2]
    exact = curve_ax.get_lines()[0]
    np.testing.assert_allclose(exact.get_ydata()[-1], bounds.gaussian_mi(0.99, 4))
    assert len(hist_ax.patches) == 2 * 39  # two histograms of 39 bins
    assert fig.get_size_inches()[0] <= MAX_WIDTH + 1e-9


# ------------------------------------------------------------------------------------------ chapter 5
@pytest.fixture(scope="module")
def small_net():
    from savl.models.srnet import DARHAGNet, SRNetConfig

    torch.manual_seed(0)
    net = DARHAGNet(SRNetConfig.smoke().replace(depths=(2, 2))).eval()
    with torch.no_grad():  # trained-looking DSCA: a non-zero severity net and a larger gamma
        for dsca in net.dsca:
            dsca.severity_net[-1].weight.normal_(0, 0.2)
            dsca.gamma_raw.fill_(1.0)
    return net


@pytest.fixture(scope="module")
def small_lr():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 16, 12, generator=g)


def _block_call(net, lr, group):
    """(x, size, bias) the first block of `group` receives in the network's own forward pass."""
    seen = {}
    block = net.sr.groups[group].blocks[0]

    def hook(_m, args):
        seen.update(x=args[0], size=args[1], bias=args[3])

    handle = block.register_forward_pre_hook(hook)
    with torch.no_grad():
        net(lr)
    handle.remove()
    return seen


@pytest.mark.parametrize("group", [0, 1])
def test_attention_probe_reproduces_the_blocks_own_attention(small_net, small_lr, group):
    from savl.explore.attention import attention_probe
    from savl.models.hat import window_partition

    w = small_net.config.window
    result = attention_probe(small_net, small_lr, window=(2, 1), query=(1, 3), head=1, group=group)
    seen = _block_call(small_net, small_lr, group)
    block = small_net.sr.groups[group].blocks[0]
    H, W = seen["size"]
    with torch.no_grad():
        windows = window_partition(block.norm1(seen["x"]).view(1, H, W, -1), w)
        own = block.attn(windows, None, seen["bias"], reference=False)  # fused path, factored severity term
    index = 2 * (W // w) + 1
    torch.testing.assert_close(result["output"], own[index], atol=1e-5, rtol=1e-4)
    for key in ("with", "without"):
        assert result[key].shape == (w, w) and result[key].sum() == pytest.approx(1.0, abs=1e-5)
    assert result["tv"] > 1e-4  # the term moves attention (random severity weights, gamma = softplus(1))


def test_attention_term_is_minus_gamma_times_the_squared_severity_gap(small_net, small_lr):
    from savl.explore.attention import attention_probe

    r = attention_probe(small_net, small_lr, window=(0, 0), query=(2, 2), head=0, strength=2.5)
    s = r["severity_window"]
    expected = -2.5 * r["gamma"] * (s - s[2, 2]) ** 2
    np.testing.assert_allclose(r["term"], expected, atol=1e-5)
    assert r["gamma"] == pytest.approx(math.log1p(math.e))  # softplus(1)
    # softmax(logits + term) from "without": the two rows differ exactly by the term
    ratio = np.log(r["with"]) - np.log(r["without"]) - r["term"]
    assert np.ptp(ratio) < 1e-4


def test_attention_without_the_term_is_unchanged_by_strength_zero_or_a_flat_severity(small_net, small_lr):
    from savl.explore.attention import attention_probe
    from savl.models.encoder import Posterior

    r0 = attention_probe(small_net, small_lr, window=(1, 1), query=(0, 1), strength=0.0)
    np.testing.assert_allclose(r0["with"], r0["without"], atol=1e-7)
    assert r0["tv"] < 1e-6
    own = small_net.posterior
    try:  # the same variance everywhere and the severity net off: s_h is constant, the term vanishes
        small_net.posterior = lambda lr: Posterior(own(lr).mean, torch.zeros_like(own(lr).mean))
        saved = [d.severity_net[-1].weight.clone() for d in small_net.dsca]
        for d in small_net.dsca:
            d.severity_net[-1].weight.data.zero_()
        flat = attention_probe(small_net, small_lr, window=(1, 1), query=(0, 1), strength=3.0)
    finally:
        del small_net.posterior
        for d, wgt in zip(small_net.dsca, saved):
            d.severity_net[-1].weight.data.copy_(wgt)
    np.testing.assert_allclose(flat["with"], flat["without"], atol=1e-6)


def test_attention_probe_refuses_what_it_cannot_show(small_net, small_lr):
    from savl.explore.attention import attention_probe
    from savl.models.srnet import DARHAGNet, SRNetConfig

    with pytest.raises(ConfigError, match="window"):
        attention_probe(small_net, small_lr, window=(9, 0))
    with pytest.raises(ConfigError, match="query"):
        attention_probe(small_net, small_lr, query=(0, 4))
    plain = DARHAGNet(SRNetConfig.smoke().replace(spatial_guidance=False))
    with pytest.raises(ConfigError, match="spatial guidance"):
        attention_probe(plain, small_lr)


def test_dsca_explorer_views_and_static_twin(small_net):
    from savl.explore.attention import DEGRADATIONS, dsca_attention_explorer, spatially_varying_lr

    hr = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    lr = spatially_varying_lr(hr, "noise levels, 16 px cells", seed=0)
    assert lr.shape == (1, 3, 16, 12)
    ex = dsca_attention_explorer(small_net, hr)
    assert set(ex.controls["degradation"].options) == set(DEGRADATIONS)
    assert ex.controls["window_row"].high == 3 and ex.controls["window_col"].high == 2  # 16 x 12 LR, window 4
    fig = static_twin(ex, [{}, {"degradation": "MANet mode 4 (Table 4)", "strength": 4.0}])
    assert len([a for a in fig.axes if a.images]) == 8
    assert fig.get_size_inches()[0] <= MAX_WIDTH + 1e-9


# ------------------------------------------------------------------------------------------ chapters 4 and 8
@pytest.fixture(scope="module")
def savl_models():
    from savl.models.savl import SAVL

    torch.manual_seed(0)
    return {"SAVL": SAVL.build("smoke").eval(), "deterministic": SAVL.build("smoke", variant="deterministic").eval()}


def test_degradation_levels_and_the_plain_bicubic():
    from savl.explore.representation import degradation_level, degrade_photo
    from savl.imresize import imresize

    assert degradation_level("noise", 1.0).value == pytest.approx(0.3)
    assert degradation_level("blur", 0.0).value == pytest.approx(0.1)
    assert degradation_level("jpeg", 1.0).value == 10 and degradation_level("jpeg", 0.0).value == 95
    with pytest.raises(ConfigError, match="strength"):
        degradation_level("noise", 1.5)
    with pytest.raises(ConfigError, match="unknown degradation"):
        degradation_level("haze", 0.5)
    hr = torch.rand(3, 48, 32, generator=torch.Generator().manual_seed(0))
    lr = degrade_photo(hr, "none", 0.7)
    expected = (imresize(hr[None], scale=0.25).clamp(0, 1) * 255).round() / 255
    torch.testing.assert_close(lr, expected, atol=1e-6, rtol=0)
    grey = torch.full((3, 64, 64), 0.5)
    noisy = degrade_photo(grey, "noise", 0.5, seed=1)
    assert float((noisy - 0.5).std()) == pytest.approx(0.15, rel=0.1)


def test_load_photo_from_a_path_and_its_errors(tmp_path):
    from PIL import Image

    from savl.explore.representation import load_photo

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    name, hr = load_photo(path=str(tmp_path / "p.png"), max_side=200)
    assert name == str(tmp_path / "p.png") and hr.shape == (3, 32, 64)
    np.testing.assert_allclose(hr.permute(1, 2, 0).numpy(), pixels[4:36, 3:67] / 255.0, atol=1e-6)
    with pytest.raises(ImageError, match="nope.png"):
        load_photo(path=str(tmp_path / "nope.png"))
    Image.fromarray(pixels[:10, :10]).save(tmp_path / "tiny.png")
    with pytest.raises(ImageError, match="tiny.png.*at least 16"):
        load_photo(path=str(tmp_path / "tiny.png"))
    _, shrunk = load_photo("astronaut", max_side=64)
    assert max(shrunk.shape[-2:]) <= 64 and shrunk.shape[-1] % 16 == 0


def test_principal_colours_follow_the_dominant_direction():
    from savl.explore.representation import principal_colours

    g = torch.Generator().manual_seed(0)
    f = torch.linspace(-1, 1, 6 * 5).reshape(6, 5)
    loadings = torch.randn(8, generator=g)
    mean = loadings[:, None, None] * f[None] * 10 + 0.01 * torch.randn(8, 6, 5, generator=g)
    rgb = principal_colours(mean)
    assert rgb.shape == (6, 5, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert abs(np.corrcoef(rgb[..., 0].ravel(), f.numpy().ravel())[0, 1]) > 0.999


def test_posterior_maps_are_eq15_and_the_mean_variance(savl_models):
    from savl.explore.representation import posterior_maps

    model = savl_models["SAVL"]
    lr = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(4))
    maps = posterior_maps(model, lr)
    with torch.no_grad():
        post = model.encode(lr)
    v = post.logvar.exp().mean(1)[0].double().numpy()
    eq15 = 1 - (v - v.mean()) / v.var()
    np.testing.assert_allclose(maps["severity"], eq15, rtol=1e-4, atol=1e-4 * np.abs(eq15).max())
    np.testing.assert_allclose(maps["variance"], v, rtol=1e-5)
    assert maps["kl_per_pixel"] == pytest.approx(float(post.kl()[0]) / (20 * 24), rel=1e-6)
    det = posterior_maps(savl_models["deterministic"], lr)
    assert det["deterministic"] and np.all(det["severity"] == 1) and np.all(det["variance"] == 0)


def test_severity_explorer_uses_a_path_over_the_photo(savl_models, tmp_path):
    from PIL import Image

    from savl.explore.representation import severity_explorer

    Image.fromarray(np.full((48, 48, 3), 120, dtype=np.uint8)).save(tmp_path / "flat.png")
    ex = severity_explorer(savl_models["SAVL"], photos=["astronaut", "coffee"], max_side=64)
    result = ex.compute(**ex.values(path=str(tmp_path / "flat.png"), kind="jpeg", strength=0.5))
    assert result["name"].endswith("flat.png") and result["lr"].shape == (3, 12, 12)
    assert result["level"] == "jpeg q=52"
    fig = static_twin(ex, [{"kind": "noise"}, {"kind": "blur", "photo": "coffee"}])
    assert len([a for a in fig.axes if a.images]) == 8 and fig.get_size_inches()[0] <= MAX_WIDTH + 1e-9
    with pytest.raises(ImageError, match="missing.png"):
        ex.view(path=str(tmp_path / "missing.png"))


def test_swap_view_matches_each_models_own_swap(savl_models):
    from savl.explore.representation import degrade_photo, load_photo, swap_explorer, swap_view
    from savl.imresize import imresize

    result = swap_view(savl_models, "astronaut", "coffee", "blur", 0.5, seed=0, max_side=64)
    _, content = load_photo("astronaut", max_side=64)
    _, source = load_photo("coffee", max_side=64)
    source_lr = degrade_photo(source, "blur", 0.5, 0)
    torch.testing.assert_close(result["source_lr"], source_lr[0])
    torch.testing.assert_close(result["clean_lr"], imresize(content[None], scale=0.25)[0].clamp(0, 1))
    for name, model in savl_models.items():
        with torch.no_grad():
            own = model.swap(content[None], source_lr)[0]
        torch.testing.assert_close(result["swaps"][name]["swapped"], own)
    ex = swap_explorer(savl_models, photos=["astronaut", "coffee"], max_side=64)
    assert ex.panels == 4 and ex.values()["source"] == "coffee"
    fig = ex.view(kind="noise", strength=0.2)
    assert [a.get_title().split("\n")[0] for a in fig.axes[2:]] == ["SAVL", "deterministic"]


def test_posterior_of_an_sr_network_comes_from_its_encoder(small_net, small_lr):
    from savl.explore.representation import posterior_maps, swap_explorer
    from savl.models.srnet import DARHAGNet, SRNetConfig

    maps = posterior_maps(small_net, small_lr)
    with torch.no_grad():
        v = small_net.encoder(small_lr).variance.mean(1)[0].numpy()
    np.testing.assert_allclose(maps["variance"], v, rtol=1e-5)
    with pytest.raises(ConfigError, match="no encoder"):
        posterior_maps(DARHAGNet(SRNetConfig.smoke().replace(channel_guidance=False, spatial_guidance=False)), small_lr)
    with pytest.raises(ConfigError, match="not: net"):
        swap_explorer({"net": small_net}, photos=["astronaut"])
