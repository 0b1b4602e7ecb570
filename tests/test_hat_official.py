"""savl.models.hat_official: official HAT state dicts (XPixelGroup/HAT naming) load into our HAT.

The official-layout state dicts are built here from the upstream layout rules (key names and the OCAB index
of XPixelGroup/HAT's hat_arch.py, written out below with plain loops), never by the loader's own code.
"""

import math

import pytest
import torch

from savl.errors import ModelFileError
from savl.models import hat_official
from savl.models.hat import HAT, overlapping_relative_position_index
from savl.models.hat_official import infer_hat_config, load_official_hat

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(embed_dim=12, depths=(2, 1), heads=(2, 3), window=4, compress=3, squeeze=3, upscale=2, mlp_ratio=2.0)


def _upstream_oca_index(w: int, ow: int, wrap: bool) -> torch.Tensor:
    # hat_arch.py calculate_rpi_oca: offset key - query per axis, shifted by w - ow + 1, rows of width w + ow - 1
    span = w + ow - 1
    rows = [
        [(ky - qy + w - ow + 1) * span + (kx - qx + w - ow + 1) for ky in range(ow) for kx in range(ow)]
        for qy in range(w)
        for qx in range(w)
    ]
    out = torch.tensor(rows, dtype=torch.long)
    return out % (span * span) if wrap else out


def _upstream_sa_index(w: int) -> torch.Tensor:
    # hat_arch.py calculate_rpi_sa: offset query - key per axis, shifted by w - 1, rows of width 2w - 1
    rows = [
        [(qy - ky + w - 1) * (2 * w - 1) + (qx - kx + w - 1) for ky in range(w) for kx in range(w)]
        for qy in range(w)
        for qx in range(w)
    ]
    return torch.tensor(rows, dtype=torch.long)


_CAB_UP = {
    "conv_block.body.0.": "conv_block.cab.0.",
    "conv_block.body.2.": "conv_block.cab.2.",
    "conv_block.body.3.body.1.": "conv_block.cab.3.attention.1.",
    "conv_block.body.3.body.3.": "conv_block.cab.3.attention.3.",
}


def to_official(model: HAT) -> dict[str, torch.Tensor]:
    """Our HAT's weights in the official layout, with the official index buffers."""
    w = model.window
    ow = model.groups[0].overlap_attn.overlap_window
    out = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "groups":
            i, rest = parts[1], ".".join(parts[2:])
            if rest.startswith("blocks."):
                for ours, up in _CAB_UP.items():
                    inner = rest.split(".", 2)[2]
                    if inner.startswith(ours):
                        rest = ".".join(rest.split(".", 2)[:2]) + "." + up + inner[len(ours) :]
                key = f"layers.{i}.residual_group.{rest}"
            elif rest.startswith("overlap_attn."):
                key = f"layers.{i}.residual_group.{rest}"
                if rest.endswith("relative_position_bias_table"):
                    # the official table row for each (query, key) pair holds the bias our model gives that pair
                    ours_index = overlapping_relative_position_index(w, ow)
                    up_index = _upstream_oca_index(w, ow, wrap=True)
                    table = torch.zeros_like(value)
                    table[up_index.flatten()] = value[ours_index.flatten()]
                    value = table
            else:  # the group's conv
                key = f"layers.{i}.{rest}"
        elif parts[0] == "patch_norm":
            key = "patch_embed." + key.replace("patch_norm", "norm", 1)
        out[key] = value.clone()
    out["relative_position_index_SA"] = _upstream_sa_index(w)
    out["relative_position_index_OCA"] = _upstream_oca_index(w, ow, wrap=False)
    return out


def _perturbed_hat(seed: int = 0, **kw) -> HAT:
    torch.manual_seed(seed)
    model = HAT(**{**TINY, **kw}).double().eval()
    with torch.no_grad():  # every table and bias non-trivial (they start at trunc-normal .02 and 0)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_official_layout_round_trips_to_the_same_network(tmp_path, generator):
    model = _perturbed_hat()
    official = to_official(model)
    assert "layers.1.residual_group.blocks.0.conv_block.cab.3.attention.1.weight" in official
    assert "patch_embed.norm.weight" in official and "layers.0.conv.weight" in official
    path = tmp_path / "HAT_tiny.pth"
    decoy = {k: v if k.startswith("relative_position_index") else torch.zeros_like(v) for k, v in official.items()}
    torch.save({"params": decoy, "params_ema": official}, path)
    cfg = infer_hat_config(official)
    assert cfg == {**TINY, "depths": [2, 1], "heads": [2, 3], "overlap": 0.5, "in_ch": 3, "num_feat": 64}
    loaded = load_official_hat(path, model=HAT(**cfg).double())  # params_ema is taken before params
    assert not loaded.training
    x = torch.rand(2, 3, 9, 13, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-13)
        for ours, theirs in zip(loaded.groups, model.groups):
            torch.testing.assert_close(ours.overlap_attn.position_bias(), theirs.overlap_attn.position_bias())
    # `key` picks another entry
    zeros = load_official_hat(path, key="params")
    assert all((p == 0).all() for p in zeros.parameters())


def test_ocab_table_rows_by_hand():
    # window 4, overlap window 6: table rows of width 9, 81 rows; official row of (query, key) offsets:
    # q (0,0), k (0,0): (-1, -1) -> -10 -> row 71;  q (3,3), k (5,5): (1, 1) -> 10;
    # q (0,0), k (5,5): (4, 4) -> 40;  q (3,3), k (0,0): (-4, -4) -> -40 -> row 41.
    heads = 2
    table = torch.arange(81 * heads, dtype=torch.float64).view(81, heads)
    model = HAT(embed_dim=12, depths=(1,), heads=heads, window=4, compress=3, squeeze=3, upscale=2)
    state = to_official(model.double())
    state["layers.0.residual_group.overlap_attn.relative_position_bias_table"] = table
    loaded = load_official_hat(state, model=HAT(**infer_hat_config(state)).double())
    bias = loaded.groups[0].overlap_attn.position_bias()  # (heads, 16, 36)
    rows = {((0, 0), (0, 0)): 71, ((3, 3), (5, 5)): 10, ((0, 0), (5, 5)): 40, ((3, 3), (0, 0)): 41}
    for (q, k), row in rows.items():
        torch.testing.assert_close(bias[:, q[0] * 4 + q[1], k[0] * 6 + k[1]], table[row])


def _formula_state(keys_and_shapes):
    state = {}
    for k, (key, shape) in enumerate(sorted(keys_and_shapes)):
        n = math.prod(shape)
        values = 0.1 * torch.sin(0.5 + 0.37 * k + 1.3 * torch.arange(n, dtype=torch.float64))
        state[key] = values.reshape(shape)
    return state


def test_matches_the_official_hat_forward(monkeypatch):
    # Golden values from XPixelGroup/HAT @ 1638a9a (hat/archs/hat_arch.py, HAT.forward), run outside this
    # repository (built in float32, then .double(); its RGB mean stays the float32 value, as ours) with
    # HAT(img_size=8, window_size=4, depths=[2, 1], num_heads=[2, 3], embed_dim=12,
    # compress_ratio=3, squeeze_factor=3, upscale=2, mlp_ratio=2, upsampler='pixelshuffle'), every parameter
    # (sorted by name, k = 0, 1, ...) set to 0.1 sin(0.5 + 0.37 k + 1.3 n) over its flattened entries n, input
    # 0.5 + 0.4 sin(0.3 i + 0.7 j + 1.1 c) on an 8 x 8 image, all in float64.
    template = to_official(HAT(**TINY))
    params = {k: tuple(v.shape) for k, v in template.items() if not k.startswith("relative_position_index")}
    assert len(params) == 107  # the official model's parameter count of tensors
    state = _formula_state(params.items()) | {k: v for k, v in template.items() if k not in params}
    i, j, c = (torch.arange(n, dtype=torch.float64) for n in (8, 8, 3))
    x = 0.5 + 0.4 * torch.sin(0.3 * i.view(1, 1, 8, 1) + 0.7 * j.view(1, 1, 1, 8) + 1.1 * c.view(1, 3, 1, 1))

    def run():
        model = load_official_hat(state, model=HAT(**infer_hat_config(state)).double())
        with torch.no_grad():
            return model(x)

    y = run()
    assert y.shape == (1, 3, 16, 16)
    golden = [296.4950358104322, 0.4828089573479555, 0.3357487127781972, 0.3475487901952202]
    got = [y.sum().item(), y[0, 0, 0, 0].item(), y[0, 1, 7, 9].item(), y[0, 2, 15, 15].item()]
    assert got == pytest.approx(golden, rel=1e-10)
    assert y.std().item() == pytest.approx(0.09816288819800534, rel=1e-10)
    # Without the OCAB permutation (the official index replaced by ours) the output moves by far more than the
    # golden tolerance above, so the comparison does see the table order.
    monkeypatch.setattr(hat_official, "official_overlap_index", overlapping_relative_position_index)
    state.pop("relative_position_index_OCA")
    assert (run() - y).abs().max().item() > 1e-6


def test_bad_files_give_one_line_errors(tmp_path):
    model = HAT(**TINY)
    official = to_official(model)
    cases = {}
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle at all")
    cases[garbage] = "weights-only torch file"
    cases[tmp_path / "missing.pth"] = "no such file"
    listed = tmp_path / "list.pth"
    torch.save([1, 2, 3], listed)
    cases[listed] = "not a dictionary"
    no_conv = tmp_path / "no_conv.pth"
    torch.save({"params_ema": {k: v for k, v in official.items() if k != "conv_first.weight"}}, no_conv)
    cases[no_conv] = "conv_first.weight"
    extra = tmp_path / "extra.pth"
    torch.save({"params": {**official, "layers.0.residual_group.downsample.weight": torch.zeros(1)}}, extra)
    cases[extra] = "unexpected key"
    bad_index = tmp_path / "bad_index.pth"
    wrong = torch.zeros(16, 36, dtype=torch.long)
    torch.save({"params": {**official, "relative_position_index_OCA": wrong}}, bad_index)
    cases[bad_index] = "relative_position_index_OCA"
    for path, text in cases.items():
        with pytest.raises(ModelFileError, match=text) as e:
            load_official_hat(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ModelFileError, match="no 'params_x' entry"):
        load_official_hat({"params": official}, key="params_x")
    with pytest.raises(ModelFileError, match="shape"):  # a model of another width
        load_official_hat(official, model=HAT(**{**TINY, "embed_dim": 24}))


@pytest.mark.parametrize(
    "name, sizes",
    [
        # options/test/HAT-S_SRx4.yml and HAT_SRx4.yml of XPixelGroup/HAT (window 16, overlap 0.5, mlp_ratio 2)
        ("HAT-S", dict(embed_dim=144, compress=24, squeeze=24)),
        ("HAT", dict(embed_dim=180, compress=3, squeeze=30)),
    ],
)
def test_published_sizes_are_inferred(name, sizes):
    depths, heads = (6,) * 6, (6,) * 6
    with torch.device("meta"):
        model = HAT(**sizes, depths=depths, heads=heads, window=16, upscale=4)
        state = to_official(model)
    cfg = infer_hat_config(state, name)
    assert cfg == {
        **sizes,
        "depths": list(depths),
        "heads": list(heads),
        "window": 16,
        "mlp_ratio": 2.0,
        "overlap": 0.5,
        "upscale": 4,
        "in_ch": 3,
        "num_feat": 64,
    }
