"""CLUB estimator: a contrastive log-ratio upper bound on I(x; y) (Cheng et al., 2020; the paper's ablation, §4.4).

Trains the same ``savl.losses.CLUB`` module that the ``deterministic_club`` SAVL variant uses, so the
ablation and this analysis share one implementation. With x fixed, "alternation" reduces to fitting
q(y | x) by maximum likelihood, then reading the bound on held-out pairs (20 %, never trained on).
"""

from __future__ import annotations

import torch

from savl.analysis._arrays import one_thread
from savl.analysis.mine import prepare_pair
from savl.errors import ConfigError


def club(
    x,
    y,
    steps: int = 1000,
    batch: int = 256,
    lr: float = 1e-3,
    hidden: int = 64,
    seed: int = 0,
    holdout: float = 0.2,
    device: str | torch.device | None = None,
) -> float:
    """CLUB estimate of I(x; y) in nats from paired samples ``x`` (n, dx), ``y`` (n, dy).

    Columns are standardised (the bound is read with a fitted q, so this only eases the fit). The
    held-out estimate is the mean of ``CLUB.forward`` over chunks of ``batch`` pairs.
    """
    with one_thread():
        return _club(x, y, steps, batch, lr, hidden, seed, holdout, device)


def _club(x, y, steps, batch, lr, hidden, seed, holdout, device) -> float:
    from savl.losses import CLUB  # imported here: savl.losses pulls in the perceptual/GAN stack

    if steps < 1 or batch < 2 or not 0 < holdout < 1:
        raise ConfigError(f"club: bad settings steps={steps}, batch={batch}, holdout={holdout}")
    xa, ya, tr, ho, gen, device = prepare_pair(x, y, "club", holdout, seed, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        q = CLUB(xa.shape[1], ya.shape[1], hidden=hidden).to(device)
    opt = torch.optim.Adam(q.parameters(), lr=lr)
    tr_t = torch.as_tensor(tr, device=device)
    bsz = min(batch, tr.size)
    q.train()
    for _ in range(steps):
        idx = tr_t[torch.randint(tr.size, (bsz,), generator=gen, device=device)]
        loss = -q.log_likelihood(xa[idx], ya[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    q.eval()
    ho_t = torch.as_tensor(ho, device=device)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, ho.size, batch):
            idx = ho_t[start : start + batch]
            if idx.numel() < 2:
                continue
            total += float(q(xa[idx], ya[idx]).mean()) * idx.numel()
            count += idx.numel()
    return total / count
