"""The protocol registry: every named protocol runs, is seeded, records JSON params and replays exactly."""

import json
import math

import pytest
import torch

from savl.degrade.protocols import HAZE_AIRLIGHT, HAZE_BETA, MOTION_LENGTH, PROTOCOLS, get_protocol
from savl.degrade.spatial import haze, manet_degrade, motion_blur, to_8bit
from savl.errors import ConfigError
from savl.imresize import imresize

NAMES = [
    "realesrgan",
    "bicubic",
    "table5-type",
    "table5-blur",
    "table5-noise",
    *(f"manet-mode{m}" for m in range(1, 6)),
    "ood-motion",
    "ood-haze",
]


@pytest.fixture(scope="module")
def hr():
    # A smooth colour image with texture: every protocol changes it visibly.
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    base = 0.5 + 0.25 * torch.sin(xx / 9) * torch.cos(yy / 13)
    return (torch.stack([base, base.flip(0), base.flip(1)]) + 0.1 * torch.rand(3, 96, 96, generator=g))[None].clamp(
        0, 1
    )


def test_registry_names():
    assert sorted(PROTOCOLS) == sorted(NAMES)
    for name in NAMES:
        p = get_protocol(name)
        assert p.name == name and p.scale == 4 and p.description


@pytest.mark.parametrize("name", NAMES)
def test_protocol_runs_records_json_and_replays_exactly(name, hr):
    protocol = get_protocol(name)
    lr, params = protocol(hr, torch.Generator().manual_seed(5))
    assert lr.shape == (1, 3, 24, 24) and lr.dtype == torch.float32
    # 8-bit levels in [0, 1]
    assert lr.min() >= 0 and lr.max() <= 1
    torch.testing.assert_close(lr * 255, (lr * 255).round(), atol=1e-4, rtol=0)
    assert isinstance(params, list) and len(params) == 1 and isinstance(params[0], dict)
    text = json.dumps(params)  # plain JSON: no tensors, numpy scalars or NaN
    assert "NaN" not in text and "Infinity" not in text
    assert torch.equal(protocol.replay(hr, json.loads(text)), lr)
    again, params2 = protocol(hr, torch.Generator().manual_seed(5))
    assert torch.equal(again, lr) and params2 == params
    if name != "bicubic":  # the only deterministic protocol
        other, params3 = protocol(hr, torch.Generator().manual_seed(6))
        assert params3 != params and not torch.equal(other, lr)


@pytest.mark.parametrize("name", ["table5-type", "manet-mode5", "ood-motion", "ood-haze", "bicubic"])
def test_batches_give_one_record_per_image(name, hr):
    protocol = get_protocol(name)
    batch = torch.cat([hr, hr.flip(-1)])
    lr, params = protocol(batch, torch.Generator().manual_seed(1))
    assert lr.shape == (2, 3, 24, 24) and len(params) == 2
    assert torch.equal(protocol.replay(batch, params), lr)
    # Each image replays alone from its own record.
    assert torch.equal(protocol.replay(batch[1:], params[1:]), lr[1:])
    with pytest.raises(ConfigError, match="params dicts for a batch of 2"):
        protocol.replay(batch, params[:1])


def test_bicubic_is_matlab_imresize_rounded(hr):
    lr, _ = get_protocol("bicubic")(hr)
    assert torch.equal(lr, to_8bit(imresize(hr, scale=1 / 4)))
    flat = torch.full((1, 3, 40, 48), 0.2)
    torch.testing.assert_close(get_protocol("bicubic")(flat)[0], torch.full((1, 3, 10, 12), 51 / 255))


def test_ood_params_lie_in_their_ranges_and_define_the_output(hr):
    lr, params = get_protocol("ood-motion")(hr, torch.Generator().manual_seed(3))
    p = params[0]
    assert MOTION_LENGTH[0] <= p["length"] <= MOTION_LENGTH[1] and 0 <= p["angle"] < math.pi
    assert torch.equal(lr, to_8bit(imresize(motion_blur(hr, p["length"], p["angle"]), scale=1 / 4)))
    lr, params = get_protocol("ood-haze")(hr, torch.Generator().manual_seed(3))
    p = params[0]
    assert HAZE_BETA[0] <= p["beta"] <= HAZE_BETA[1] and HAZE_AIRLIGHT[0] <= p["airlight"] <= HAZE_AIRLIGHT[1]
    assert torch.equal(lr, to_8bit(imresize(haze(hr, p["beta"], p["airlight"]), scale=1 / 4)))


@pytest.mark.parametrize("mode", [2, 5])
def test_manet_protocol_is_manet_degrade_at_x4_with_noise_15(mode, hr):
    lr, params = get_protocol(f"manet-mode{mode}")(hr, torch.Generator().manual_seed(2))
    want, _, want_params = manet_degrade(hr, mode, torch.Generator().manual_seed(2), scale=4, noise=15)
    assert torch.equal(lr, want) and params == want_params
    assert params[0]["noise"] == 15 and params[0]["scale"] == 4 and params[0]["block"] == 40


def test_table5_protocol_uses_64_pixel_patches(hr):
    _, params = get_protocol("table5-noise")(hr, torch.Generator().manual_seed(0))
    assert params[0]["patch"] == 64 and len(params[0]["labels"]) == 2 and len(params[0]["labels"][0]) == 2


def test_unknown_protocol_and_bad_input(hr):
    with pytest.raises(ConfigError, match=r"unknown degradation protocol 'nope'; valid: realesrgan, bicubic"):
        get_protocol("nope")
    with pytest.raises(ConfigError, match="B, 3, H, W"):
        get_protocol("bicubic")(hr[0])
    with pytest.raises(ConfigError, match="B, 3, H, W"):
        get_protocol("manet-mode1")(hr[:, :1])
    with pytest.raises(ConfigError, match="list of dicts"):
        get_protocol("table5-blur").replay(hr, {"labels": []})
    with pytest.raises(ConfigError, match="lack the key 'beta'"):
        get_protocol("ood-haze").replay(hr, [{"airlight": 0.8}])
