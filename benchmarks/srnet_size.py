"""Parameters and FLOPs of the SR network beside the paper's Table 2 (savl/models/srnet.py, savl/models/dsca.py).

Counts parameters (total, encoder, DSCA, backbone) and forward FLOPs at 64x64 and 128x128 LR, batch 1, for the
`paper` profile with both guidances, without channel guidance, without spatial guidance (Table 2's three SAVL
rows), plain HAT (our backbone, no encoder), and HAT-S for scale. FLOPs come from
`torch.utils.flop_counter.FlopCounterMode`, which counts matrix products and convolutions at 2 FLOPs per
multiply-accumulate and ignores element-wise work (softmax, norms, activations);
we report both GFLOPs (= 2 x GMACs) and GMACs, because SR papers usually print MACs under the name "FLOPs".
The count uses the materialised attention path, where DSCA's factored severity term is one (N x r)(r x N)
product per head and window (r = 2); the fused path instead widens q, k and v by r channels.
The count runs on the `meta` device (shapes only, no arithmetic); a smoke-size model is also counted on the
CPU with real tensors and must give the same number, which checks that shortcut.

    python benchmarks/srnet_size.py [--out DIR]   # writes srnet_size.{json,md} (default benchmarks/results)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from savl.models.hat import HAT
from savl.models.srnet import DARHAGNet, SRNetConfig
from savl.provenance import atomic_write_text, git_commit, machine_info

RESULTS = Path(__file__).parent / "results"
SIZES = (64, 128)
# Paper Table 2 (SAVL rows): parameters in millions and "GFLOPs" (convention not stated in the paper).
PAPER = {
    "savl_both": {"params_m": 14.0, "gflops": 499},
    "savl_no_channel": {"params_m": 14.0, "gflops": 499},
    "savl_no_spatial": {"params_m": 13.6, "gflops": 462},
}


def count_flops(model: torch.nn.Module, side: int, device: str) -> dict[str, float]:
    """Forward FLOPs of `model` on a (1, 3, side, side) input, total and per part (FlopCounterMode)."""
    x = (
        torch.rand(1, 3, side, side, device=device)
        if device != "meta"
        else torch.empty(1, 3, side, side, device=device)
    )
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, reference=True)  # materialised attention: every product is a counted matmul
    per = counter.get_flop_counts()
    part = lambda name: sum(per.get(name, {}).values())  # noqa: E731
    root = type(model).__name__
    total = counter.get_total_flops()
    dsca = sum(part(f"{root}.dsca.{i}") for i in range(len(getattr(model, "dsca", None) or [])))
    encoder = part(f"{root}.encoder")
    return {"total": total, "encoder": encoder, "dsca": dsca, "backbone": total - encoder - dsca}


def params(model: torch.nn.Module) -> dict[str, int]:
    if isinstance(model, DARHAGNet):
        return model.parameter_counts()
    n = sum(p.numel() for p in model.parameters())
    return {"total": n, "encoder": 0, "dsca": 0, "backbone": n}


def variants() -> dict[str, torch.nn.Module]:
    paper = SRNetConfig.paper()
    return {
        "savl_both": DARHAGNet(paper),
        "savl_no_channel": DARHAGNet(paper.replace(channel_guidance=False)),
        "savl_no_spatial": DARHAGNet(paper.replace(spatial_guidance=False)),
        "plain_hat": DARHAGNet(paper.replace(spatial_guidance=False, channel_guidance=False)),
        "hat_s": HAT(144, (6,) * 6, 6, 16, 2.0, 24, 24, 0.5),
    }


def meta_matches_real() -> dict[str, float]:
    """The smoke model counted on meta and on real CPU tensors: the two totals must agree."""
    torch.manual_seed(0)
    real = DARHAGNet(SRNetConfig.smoke()).eval()
    with torch.device("meta"):
        meta = DARHAGNet(SRNetConfig.smoke()).eval()
    a, b = count_flops(real, 32, "cpu")["total"], count_flops(meta, 32, "meta")["total"]
    if a != b:
        raise SystemExit(f"meta FLOP count {b} differs from the real count {a}")
    return {"smoke_32x32_real": a, "smoke_32x32_meta": b}


def markdown(record: dict) -> str:
    lines = [
        "# SR network size (benchmarks/srnet_size.py)",
        "",
        f"Command: `{record['command']}`; torch {record['torch']}, commit `{record['git_commit']}`, {record['date']}, "
        f"{record['machine']['cpu_model']} ({record['machine']['cpu_cores']} cores). "
        "FLOPs from `FlopCounterMode` (2 per multiply-accumulate; element-wise ops not counted), forward, "
        "batch 1, `paper` profile; GMACs = GFLOPs / 2.",
        "",
        "| variant | params (M) | encoder | DSCA | backbone | GFLOPs 64² | GMACs 64² | GFLOPs 128² | GMACs 128² "
        "| paper (Table 2): params / GFLOPs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in record["variants"].items():
        p = row["params"]
        f64, f128 = row["flops"]["64"]["total"], row["flops"]["128"]["total"]
        paper = PAPER.get(name)
        ref = f"{paper['params_m']} M / {paper['gflops']}" if paper else "-"
        lines.append(
            f"| {name} | {p['total'] / 1e6:.2f} | {p['encoder'] / 1e6:.2f} | {p['dsca'] / 1e6:.2f} | "
            f"{p['backbone'] / 1e6:.2f} | {f64 / 1e9:.1f} | {f64 / 2e9:.1f} | {f128 / 1e9:.1f} | {f128 / 2e9:.1f} "
            f"| {ref} |"
        )
    v = record["variants"]
    both, nos, noc = v["savl_both"], v["savl_no_spatial"], v["savl_no_channel"]
    d_params = (both["params"]["total"] - nos["params"]["total"]) / 1e6
    d_flops = (both["flops"]["128"]["total"] - nos["flops"]["128"]["total"]) / 1e9
    c_params = (both["params"]["total"] - noc["params"]["total"]) / 1e6
    c_flops = (both["flops"]["128"]["total"] - noc["flops"]["128"]["total"]) / 1e9
    lines += [
        "",
        f"Spatial guidance adds {d_params:.2f} M parameters and {d_flops:.1f} GFLOPs at 128² "
        f"(paper: 0.4 M and 37 G, i.e. 14.0 - 13.6 and 499 - 462); channel guidance {c_params:.3f} M and "
        f"{c_flops:.2f} GFLOPs (paper: below its rounding, 14.0 and 499 either way). The paper states neither its "
        "FLOP convention nor its input size; its 499 G lies between our GMACs and GFLOPs at 128² LR. Element-wise "
        "work that FlopCounterMode skips (softmax, tanh, norms) is not in these numbers.",
        "",
        f"Check: the smoke model counted on `meta` and on real CPU tensors gives the same total "
        f"({record['meta_check']['smoke_32x32_real'] / 1e9:.4f} GFLOPs at 32²).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(RESULTS), help="folder for srnet_size.{json,md}")
    out = Path(p.parse_args().out)
    start = time.time()
    check = meta_matches_real()
    record = {
        "benchmark": "srnet_size",
        "command": "python benchmarks/srnet_size.py",
        "git_commit": git_commit(dirty=True),
        "torch": torch.__version__,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "flop_convention": "FlopCounterMode: 2 FLOPs per multiply-accumulate, matmuls and convolutions only; "
        "GMACs = GFLOPs / 2",
        "paper_table2": PAPER,
        "meta_check": check,
        "variants": {},
    }
    with torch.device("meta"):
        models = variants()
    for name, model in models.items():
        model.eval()
        record["variants"][name] = {
            "params": params(model),
            "flops": {str(s): count_flops(model, s, "meta") for s in SIZES},
        }
    record["seconds"] = round(time.time() - start, 1)
    atomic_write_text(out / "srnet_size.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(out / "srnet_size.md", markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
