"""The SR tables at book scale from zoo cards: Table 2 and Table 4 of the paper, with the spread over seeds.

A family of the zoo is one configuration trained at several seeds (``savl.zoo.seed_cards``). Each card holds
its held-out numbers (``card["held_out_metrics"][protocol]``); the MANet protocol's (Table 4: MANet's spatially
variant kernel types 1-5, x4, noise 15) also per set, one set per kernel type (``per_set``).

* `per_set_summary`: mean and spread over seeds of one number per MANet kernel type and over all images.
* `paired_differences` / `paired_summary`: variant A minus variant B seed by seed (the same seed draws the same
  training batches and initialises the shared layers alike, so the pairing removes part of the seed noise), and
  whether the mean difference exceeds twice its standard error.
* `ordering`: whether the means rank as a claimed ordering does (the paper's Table 4: GT kernel > SAVL code >
  global guidance; its Table 2: full > without spatial > without channel modulation).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from savl.analysis.zoo_report import card_node, card_value, seed_summary
from savl.errors import DataError

#: The paper's Table 4 (A.3): RRDB-SFT on BSD100 degraded by MANet's spatially variant kernel types 1-5 (its
#: five columns, in the order of ``savl.degrade.spatial.manet_kernel_params``' modes), x4, noise 15; PSNR (dB)
#: and SSIM on Y. Row: (guidance, the paper's group, ((psnr, ssim) per kernel type)).
PAPER_TABLE4: tuple[tuple[str, str, tuple[tuple[float, float], ...]], ...] = (
    ("CDP", "global degradation learning",
     ((24.40, 0.5911), (24.71, 0.6003), (24.78, 0.6130), (24.99, 0.6176), (24.91, 0.6026))),
    ("IKC", "GT-kernel supervised",
     ((24.64, 0.5950), (24.94, 0.6162), (24.81, 0.6175), (25.01, 0.6174), (24.95, 0.6078))),
    ("MANet", "GT-kernel supervised",
     ((24.89, 0.6030), (25.21, 0.6192), (25.11, 0.6197), (25.24, 0.6200), (25.05, 0.6118))),
    ("SAVL code", "Ours, no kernel supervision",
     ((24.85, 0.6018), (25.26, 0.6200), (25.18, 0.6199), (25.22, 0.6192), (25.13, 0.6130))),
    ("GT kernel", "upper bound",
     ((24.98, 0.6082), (25.32, 0.6255), (25.33, 0.6292), (25.34, 0.6264), (25.30, 0.6233))),
)  # fmt: skip


def paper_table4(method: str) -> tuple[tuple[float, float], ...]:
    """The (psnr, ssim) per kernel type of one of the paper's Table 4 rows (a name of PAPER_TABLE4)."""
    for name, _, values in PAPER_TABLE4:
        if name == method:
            return values
    raise DataError(f"the paper's Table 4 has no row {method!r} (rows: {', '.join(r[0] for r in PAPER_TABLE4)})")


def card_value_dict(card: dict, path: Sequence[str]) -> dict:
    """The mapping at ``path`` of a card; DataError naming the card when it is missing or not a mapping."""
    node = card_node(card, path)
    if not isinstance(node, dict):
        raise DataError(f"model card {card.get('name', '?')!r}: {'/'.join(path)} is not a mapping")
    return node


def per_set_summary(cards: Sequence[dict], key: str = "psnr", protocol: str = "manet") -> dict[str, dict]:
    """{set name: seed_summary} of ``key`` over the cards of one family, for every set of the protocol's
    ``per_set`` (in the cards' order), plus "all": the card's mean over every image of the protocol."""
    if not cards:
        raise DataError("no cards to summarise")
    sets = list(card_value_dict(cards[0], ("held_out_metrics", protocol, "per_set")))
    out = {s: seed_summary(card_value(c, ("held_out_metrics", protocol, "per_set", s, key)) for c in cards)
           for s in sets}  # fmt: skip
    out["all"] = seed_summary(card_value(c, ("held_out_metrics", protocol, key)) for c in cards)
    return out


def _seed(card: dict) -> int:
    return int(card_value(card, ("config", "seed")))


def paired_differences(cards_a: Sequence[dict], cards_b: Sequence[dict], path: Sequence[str]) -> dict[int, float]:
    """{seed: a - b} of the number at ``path`` over the seeds both families have shipped, in seed order."""
    a = {_seed(c): card_value(c, path) for c in cards_a}
    b = {_seed(c): card_value(c, path) for c in cards_b}
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


def paired_summary(diffs: Mapping[int, float] | Sequence[float]) -> dict:
    """mean, sd (ddof 1), n, se (sd / sqrt n), ``resolved`` (n > 1 and |mean| > 2 se) and ``same_sign`` (n > 1
    and every difference of one sign) of paired differences; all None / False for n = 0."""
    d = list(diffs.values()) if isinstance(diffs, Mapping) else list(diffs)
    n = len(d)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0, "se": None, "resolved": False, "same_sign": False}
    mean = statistics.fmean(d)
    sd = statistics.stdev(d) if n > 1 else 0.0
    se = sd / math.sqrt(n) if n > 1 else None
    return {
        "mean": mean,
        "sd": sd,
        "n": n,
        "se": se,
        "resolved": bool(n > 1 and abs(mean) > 2 * se),
        "same_sign": bool(n > 1 and (all(x > 0 for x in d) or all(x < 0 for x in d))),
    }


def paired_text(s: dict, unit: str = " dB", digits: int = 2) -> str:
    """A `paired_summary` in words: '+0.12 ± 0.03 dB over 3 seeds, resolved', '+0.05 dB (one seed)'."""
    if s["n"] == 0:
        return "no seed shipped on both sides"
    if s["n"] == 1:
        return f"{s['mean']:+.{digits}f}{unit} (one seed: no error bar)"
    verdict = "resolved" if s["resolved"] else "not resolved"
    sign = ", the same sign at every seed" if s["same_sign"] else ""
    return f"{s['mean']:+.{digits}f} ± {s['sd']:.{digits}f}{unit} over {s['n']} seeds ({verdict}{sign})"


def ordering(means: Mapping[str, float], expected: Sequence[str]) -> dict:
    """How ``means`` rank against the claimed order ``expected`` (best first): ``ranked`` (the labels of
    ``expected`` by decreasing mean) and ``holds`` (ranked == expected). Every label must have a mean."""
    missing = [k for k in expected if k not in means]
    if missing:
        raise DataError(f"no mean for {missing[0]!r}: an ordering needs every variant")
    ranked = sorted(expected, key=lambda k: means[k], reverse=True)
    return {"ranked": ranked, "holds": ranked == list(expected)}
