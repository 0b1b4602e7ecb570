"""MINE: mutual information neural estimation (Belghazi et al., 2018; paper §4.2).

Written by hand (no maintained package). The Donsker–Varadhan bound

    I(X; Y) >= E_joint[T] - log E_marginal[exp T]

is maximised over a statistics network T (an MLP on concat(x, y)); marginal pairs come from
shuffling y within the batch. The gradient of log E[exp T] is bias-corrected with a moving average
of E[exp T] (rate 0.01), as in the paper's MINE.

The reported estimate is the DV bound on a held-out split (20 % of the pairs, never trained on), with
the marginal term averaged over several shuffles; held-out evaluation keeps an over-fitted T from
inflating the estimate on small sets. ``curve`` records the training-batch DV bound per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from savl.analysis._arrays import as_matrix, check_pair, one_thread
from savl.errors import ConfigError, DataError


@dataclass
class MineResult:
    """A MINE estimate in nats with its training curve; ``float(result)`` gives the estimate."""

    estimate: float
    curve: list[float] = field(default_factory=list)

    def __float__(self) -> float:
        return float(self.estimate)


def statistics_network(in_dim: int, hidden: int) -> nn.Module:
    """T(x, y): a two-hidden-layer ELU MLP on the concatenated pair."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, 1))


def standardise(a: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column (constant columns left at zero); MI is invariant to this."""
    sd = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def dv_bound(t_joint: torch.Tensor, t_marginal: torch.Tensor) -> torch.Tensor:
    """Donsker–Varadhan bound ``mean(T_joint) - log mean(exp T_marginal)`` (log-sum-exp for stability)."""
    return t_joint.mean() - (torch.logsumexp(t_marginal.flatten(), 0) - math.log(t_marginal.numel()))


def split_indices(n: int, holdout: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random train / held-out index split; at least 2 samples on each side."""
    perm = rng.permutation(n)
    n_hold = int(round(n * holdout))
    n_hold = min(max(n_hold, 2), n - 2)
    return perm[n_hold:], perm[:n_hold]


def prepare_pair(x, y, who: str, holdout: float, seed: int, device):
    """What MINE and CLUB both start from: standardised float32 tensors on `device`, a seeded train/held-out
    split of the rows (numpy index arrays), and a seeded torch generator for batches and shuffles."""
    if device is None:
        device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    a, b = as_matrix(x, "x"), as_matrix(y, "y")
    check_pair(a, b)
    if a.shape[0] < 8:
        raise DataError(f"{who}: need at least 8 samples, got {a.shape[0]}")
    tr, ho = split_indices(a.shape[0], holdout, np.random.default_rng(seed))
    xa = torch.as_tensor(standardise(a), dtype=torch.float32, device=device)
    ya = torch.as_tensor(standardise(b), dtype=torch.float32, device=device)
    return xa, ya, tr, ho, torch.Generator(device=device).manual_seed(seed), device


def mine(
    x,
    y,
    steps: int = 1000,
    batch: int = 256,
    lr: float = 1e-3,
    hidden: int = 64,
    seed: int = 0,
    holdout: float = 0.2,
    ema_rate: float = 0.01,
    eval_shuffles: int = 8,
    device: str | torch.device | None = None,
) -> MineResult:
    """Estimate I(x; y) in nats from paired samples ``x`` (n, dx), ``y`` (n, dy) (paper §4.2).

    Columns are standardised first. Runs on ``device`` (default: the device of ``x`` when it is a
    tensor, else CPU) with its own seeded generator; the global RNG state is left untouched.
    """
    with one_thread():
        return _mine(x, y, steps, batch, lr, hidden, seed, holdout, ema_rate, eval_shuffles, device)


def _mine(x, y, steps, batch, lr, hidden, seed, holdout, ema_rate, eval_shuffles, device) -> MineResult:
    if steps < 1 or batch < 2 or not 0 < holdout < 1 or not 0 < ema_rate <= 1:
        raise ConfigError(f"mine: bad settings steps={steps}, batch={batch}, holdout={holdout}, ema_rate={ema_rate}")
    xa, ya, tr, ho, gen, device = prepare_pair(x, y, "mine", holdout, seed, device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the network's initialisation only
        net = statistics_network(xa.shape[1] + ya.shape[1], hidden).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    tr_t = torch.as_tensor(tr, device=device)
    bsz = min(batch, tr.size)
    ema = None
    curve: list[float] = []
    for _ in range(steps):
        idx = tr_t[torch.randint(tr.size, (bsz,), generator=gen, device=device)]
        xb, yb = xa[idx], ya[idx]
        y_shuf = yb[torch.randperm(bsz, generator=gen, device=device)]
        t_joint = net(torch.cat([xb, yb], 1))
        t_marg = net(torch.cat([xb, y_shuf], 1))
        exp_mean = torch.exp(t_marg).mean()
        ema = exp_mean.detach() if ema is None else (1 - ema_rate) * ema + ema_rate * exp_mean.detach()
        # Gradient of log E[e^T] is grad E[e^T] / E[e^T]; use the moving average in the denominator.
        loss = -(t_joint.mean() - exp_mean / ema)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(float(dv_bound(t_joint.detach(), t_marg.detach())))

    with torch.no_grad():
        ho_t = torch.as_tensor(ho, device=device)
        xh, yh = xa[ho_t], ya[ho_t]
        t_joint = net(torch.cat([xh, yh], 1))
        t_marg = torch.cat(
            [
                net(torch.cat([xh, yh[torch.randperm(ho.size, generator=gen, device=device)]], 1))
                for _ in range(eval_shuffles)
            ]
        )
        estimate = float(dv_bound(t_joint, t_marg))
    return MineResult(estimate=estimate, curve=curve)
