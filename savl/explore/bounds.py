"""Chapter 2's explorer: the bounds of paper Eq. 9-11 on correlated Gaussians, in closed form and by sampling.

The world: y ~ N(0, I_d) and the encoder q(r | y) = N(rho y, (1 - rho^2) I_d), so every pair (y_i, r_i) is a
standard bivariate normal with correlation rho and I(y; r) = -d/2 log(1 - rho^2) (:func:`gaussian_mi`).

* Eq. 9 (the variational information bottleneck): for a reference marginal p' = N(0, ref_var I),
  E_y KL(q(r | y) || p') = I(y; r) + KL(q(r) || p') >= I(y; r); here the aggregate posterior q(r) is N(0, I), so
  the bound is tight at ref_var = 1 (:func:`vib_upper_bound`).
* Eq. 10 (Barber-Agakov): for a critic d(y | r) = N(alpha r, tau2 I),
  E log d(y | r) + H(y) <= I(y; r), tight at alpha = rho, tau2 = 1 - rho^2, the true conditional
  (:func:`ba_lower_bound`). The explorer fixes alpha = rho and sets tau2 = critic_scale * (1 - rho^2).

:func:`bound_samples` draws the per-sample terms whose means the two closed forms are; :func:`bounds_explorer`
puts both on sliders (correlation, dimension, ref_var, critic_scale).
"""

from __future__ import annotations

import math

import numpy as np

from savl.errors import ConfigError
from savl.explore.widgets import Explorer, Slider


def _check_rho(rho: float) -> float:
    if not 0.0 <= rho < 1.0:
        raise ConfigError(f"correlation rho must lie in [0, 1), got {rho}")
    return float(rho)


def gaussian_mi(rho: float, d: int) -> float:
    """I(y; r) = -d/2 log(1 - rho^2) nats for d independent pairs of correlation rho (the chapter's
    eq-gaussian-mi)."""
    return -0.5 * d * math.log1p(-_check_rho(rho) ** 2)


def vib_upper_bound(rho: float, d: int, ref_var: float = 1.0) -> float:
    """Eq. 9 in closed form: E_y KL(N(rho y, (1 - rho^2) I) || N(0, ref_var I))
    = d/2 [1/ref_var - 1 + log ref_var - log(1 - rho^2)] >= I(y; r), equal at ref_var = 1."""
    if ref_var <= 0:
        raise ConfigError(f"ref_var must be positive, got {ref_var}")
    return 0.5 * d * (1.0 / ref_var - 1.0 + math.log(ref_var) - math.log1p(-_check_rho(rho) ** 2))


def ba_lower_bound(rho: float, d: int, alpha: float, tau2: float) -> float:
    """Eq. 10 in closed form for the critic N(alpha r, tau2 I): E log d(y | r) + H(y)
    = d/2 [1 - log tau2 - (1 - 2 alpha rho + alpha^2) / tau2] <= I(y; r), equal at alpha = rho, tau2 = 1 - rho^2."""
    if tau2 <= 0:
        raise ConfigError(f"tau2 must be positive, got {tau2}")
    rho = _check_rho(rho)
    return 0.5 * d * (1.0 - math.log(tau2) - (1.0 - 2.0 * alpha * rho + alpha**2) / tau2)


def bound_samples(
    rho: float, d: int, ref_var: float, alpha: float, tau2: float, n: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Per-sample terms of the two bounds on n draws of (y, r): ``upper`` KL(q(r | y) || p') for each y (mean:
    :func:`vib_upper_bound`) and ``lower`` log d(y | r) + H(y) for each pair (mean: :func:`ba_lower_bound`)."""
    rho = _check_rho(rho)
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((n, d))
    var_q = 1.0 - rho**2
    r = rho * y + math.sqrt(var_q) * rng.standard_normal((n, d))
    upper = 0.5 * ((rho * y) ** 2 / ref_var + var_q / ref_var - 1.0 - math.log(var_q / ref_var)).sum(1)
    h_y = 0.5 * d * math.log(2 * math.pi * math.e)
    log_critic = -0.5 * (((y - alpha * r) ** 2) / tau2 + math.log(2 * math.pi * tau2)).sum(1)
    return {"upper": upper, "lower": log_critic + h_y}


def bounds_view(
    rho: float, d: int, ref_var: float = 1.0, critic_scale: float = 1.0, n_draws: int = 2000, seed: int = 0
) -> dict:
    """Everything the explorer draws for one setting: the three curves over rho in [0, 0.99] for this d, the
    values at ``rho``, and the per-sample terms (their means and standard errors) at ``rho``."""
    rho, d = _check_rho(rho), int(d)
    if d < 1:
        raise ConfigError(f"dimension d must be at least 1, got {d}")
    if critic_scale <= 0:
        raise ConfigError(f"critic_scale must be positive, got {critic_scale}")
    grid = np.linspace(0.0, 0.99, 100)
    tau2 = lambda r: critic_scale * (1.0 - r**2)  # noqa: E731
    samples = bound_samples(rho, d, ref_var, rho, tau2(rho), n_draws, seed)
    return {
        "rho": rho,
        "d": d,
        "ref_var": float(ref_var),
        "critic_scale": float(critic_scale),
        "grid": grid,
        "exact_curve": np.array([gaussian_mi(r, d) for r in grid]),
        "upper_curve": np.array([vib_upper_bound(r, d, ref_var) for r in grid]),
        "lower_curve": np.array([ba_lower_bound(r, d, r, tau2(r)) for r in grid]),
        "exact": gaussian_mi(rho, d),
        "upper": vib_upper_bound(rho, d, ref_var),
        "lower": ba_lower_bound(rho, d, rho, tau2(rho)),
        "samples": samples,
        "upper_mc": float(samples["upper"].mean()),
        "upper_se": float(samples["upper"].std(ddof=1) / math.sqrt(n_draws)),
        "lower_mc": float(samples["lower"].mean()),
        "lower_se": float(samples["lower"].std(ddof=1) / math.sqrt(n_draws)),
    }


def draw_bounds(result: dict, axes) -> None:
    """Left: the bounds and I(y; r) against rho (the current rho marked); right: the per-sample terms at rho,
    their means (dashed) and I(y; r) (black)."""
    ax, hx = axes[0], axes[1]
    g = result["grid"]
    ax.plot(g, result["exact_curve"], "k-", lw=2, label="$I(y; r)$")
    ax.plot(g, result["upper_curve"], "C3--", label="upper bound (Eq. 9)")
    ax.plot(g, result["lower_curve"], "C0--", label="lower bound (Eq. 10)")
    ax.axvline(result["rho"], color="grey", ls=":", lw=1)
    for key, colour in (("upper", "C3"), ("exact", "k"), ("lower", "C0")):
        ax.plot(result["rho"], result[key], "o", color=colour, ms=4)
    top = max(result["upper_curve"].max(), result["exact_curve"].max())
    ax.set_ylim(min(0.0, float(result["lower_curve"].min())) - 0.05 * top, 1.05 * top)
    ax.set_xlabel(r"correlation $\rho$", fontsize=9)
    ax.set_ylabel("nats", fontsize=9)
    ax.set_title(
        f"d = {result['d']}, $\\varsigma^2$ = {result['ref_var']:.2g}, "
        f"$\\tau^2$ = {result['critic_scale']:.2g} $(1 - \\rho^2)$",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="upper left")
    s = result["samples"]
    lo = min(np.percentile(s["upper"], 0.5), np.percentile(s["lower"], 0.5))
    hi = max(np.percentile(s["upper"], 99), np.percentile(s["lower"], 99.5), result["exact"])
    bins = np.linspace(lo, hi, 40)
    hx.hist(s["lower"], bins=bins, color="C0", alpha=0.5, label="lower: $\\log d(y|r) + H(y)$")
    hx.hist(s["upper"], bins=bins, color="C3", alpha=0.5, label="upper: KL$(q(r|y) \\| p')$")
    hx.axvline(result["lower_mc"], color="C0", ls="--", lw=1.2)
    hx.axvline(result["upper_mc"], color="C3", ls="--", lw=1.2)
    hx.axvline(result["exact"], color="k", lw=1.5, label=f"$I(y;r) = {result['exact']:.2f}$")
    hx.set_xlabel(f"per-sample term at $\\rho = {result['rho']:.2f}$ (nats)", fontsize=9)
    hx.set_yticks([])
    hx.set_title(
        f"sample means (dashed): lower {result['lower_mc']:.2f} ± {result['lower_se']:.2f}, "
        f"upper {result['upper_mc']:.2f} ± {result['upper_se']:.2f}",
        fontsize=8,
    )
    hx.legend(fontsize=8, loc="best", framealpha=0.9)


def bounds_explorer(n_draws: int = 2000, seed: int = 0) -> Explorer:
    """Sliders for rho, d, the reference variance of Eq. 9 and the critic's variance scale of Eq. 10.

    Example::

        ex = bounds_explorer()
        fig = ex.view(rho=0.9, d=8)                      # one view, as the live explorer draws it
        twin = static_twin(ex, [{}, {"ref_var": 4.0}])   # the book's static grid
        live = interactive(ex)                           # JupyterLab: display(live.box)
    """
    return Explorer(
        title="Eq. 9-11 on correlated Gaussians",
        controls={
            "rho": Slider(0.0, 0.99, 0.8, step=0.01, label="correlation ρ"),
            "d": Slider(1, 64, 8, integer=True, label="dimension d"),
            "ref_var": Slider(0.25, 4.0, 1.0, log=True, label="p' variance ς²"),
            "critic_scale": Slider(0.25, 4.0, 1.0, log=True, label="critic τ² / (1 - ρ²)"),
        },
        compute=lambda rho, d, ref_var, critic_scale: bounds_view(rho, d, ref_var, critic_scale, n_draws, seed),
        draw=draw_bounds,
        panels=2,
        panel_size=(4.2, 3.3),
        caption=lambda v: (
            f"ρ = {v['rho']:.2f}, d = {v['d']}, ς² = {v['ref_var']:.2g}, τ² = {v['critic_scale']:.2g} (1 - ρ²)"
        ),
    )
