"""U-Net discriminator with spectral norm (savl/models/discriminator.py; Real-ESRGAN §4.2)."""

import pytest
import torch
from torch.nn.utils import parametrize

from savl.errors import ImageError
from savl.models.discriminator import UNetDiscriminatorSN
from savl.models.io import load_model, save_model

NORMALISED = [f"conv{i}" for i in range(1, 9)]


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (8, 9)])
def test_logits_have_input_size(generator, size):
    torch.manual_seed(0)
    d = UNetDiscriminatorSN(base=8)
    out = d(torch.rand(2, 3, *size, generator=generator))
    assert out.shape == (2, 1, *size)


def test_parameter_count_closed_form():
    # conv0 3->C (3x3, bias), C->2C->4C->8C (4x4, no bias), 8C->4C->2C->C (3x3), two C->C (3x3), C->1 (3x3, bias)
    c = 64
    expected = (3 * c * 9 + c) + 16 * (c * 2 * c + 2 * c * 4 * c + 4 * c * 8 * c)
    expected += 9 * (8 * c * 4 * c + 4 * c * 2 * c + 2 * c * c + 2 * c * c) + (c * 9 + 1)
    with torch.device("meta"):
        d = UNetDiscriminatorSN()
    assert sum(p.numel() for p in d.parameters()) == expected == 4_376_897


def test_spectral_norm_gives_unit_largest_singular_value(generator):
    torch.manual_seed(0)
    d = UNetDiscriminatorSN(base=16).train()
    x = torch.rand(1, 3, 32, 32, generator=generator)
    for _ in range(30):  # each training-mode forward runs one power iteration per layer
        d(x)
    for name in NORMALISED:
        layer = getattr(d, name)
        assert parametrize.is_parametrized(layer, "weight")
        w = layer.weight.detach()
        sigma = torch.linalg.svdvals(w.reshape(w.shape[0], -1))[0]
        assert abs(sigma.item() - 1.0) < 0.03, name
        raw = layer.parametrizations.weight.original.detach()
        assert abs(torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2).item() - 1.0) > 0.05
    for name in ("conv0", "conv9"):
        assert not parametrize.is_parametrized(getattr(d, name), "weight")


def test_skip_connections_matter_and_gradients_flow(generator):
    torch.manual_seed(0)
    a = UNetDiscriminatorSN(base=8, skip=True).eval()
    b = UNetDiscriminatorSN(base=8, skip=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 16, 16, generator=generator, requires_grad=True)
    out = a(x)
    assert not torch.allclose(out, b(x))
    out.mean().backward()
    assert x.grad.abs().sum() > 0
    assert a.conv3.parametrizations.weight.original.grad.abs().sum() > 0


def test_bad_inputs_and_round_trip(tmp_path, generator):
    d = UNetDiscriminatorSN(base=4).eval()
    with pytest.raises(ImageError):
        d(torch.rand(1, 1, 16, 16))
    with pytest.raises(ImageError):
        d(torch.rand(1, 3, 4, 16))
    path = save_model(d, tmp_path / "d.safetensors")
    loaded = load_model(path)
    x = torch.rand(1, 3, 16, 16, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), d(x))
