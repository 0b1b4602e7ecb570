"""SAVL objective and variants (Eq. 12-14, 29-30, §4.4): loss composition, overfitting, the code matters, I/O."""

import kornia
import pytest
import torch
import torch.nn.functional as F

from savl.errors import ConfigError
from savl.losses import KLSchedule, convert_beta
from savl.models.decoder import Decoder, DecoderConfig
from savl.models.encoder import AmortizedEncoder, EncoderConfig
from savl.models.io import load_model, save_model
from savl.models.savl import SAVL, SAVLConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _smooth_hr(generator, size=48, batch=1):
    """A smooth random HR image (bicubic-upsampled noise), in [0, 1]."""
    x = torch.rand(batch, 3, size // 4, size // 4, generator=generator)
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("variant", ["savl", "deterministic", "deterministic_club"])
def test_every_variant_runs_forward_backward_at_odd_size(generator, variant):
    torch.manual_seed(0)
    model = SAVL.build("smoke", variant=variant, lam=0.5 if variant == "deterministic_club" else 0.0, anneal_steps=10)
    lr = torch.rand(2, 3, 37, 53, generator=generator)
    hr = torch.rand(2, 3, 148, 212, generator=generator)
    out = model(lr, hr, step=4, generator=generator)
    assert out["y_hat"].shape == lr.shape
    assert out["beta"].item() == pytest.approx(5e-4 * 0.4)
    if variant == "savl":
        # beta_t alone weighs the KL (no 1 + lam factor)
        torch.testing.assert_close(out["loss"], out["rec"] + out["beta"] * out["kl"])
        # "pixel" reduction: Eq. 7 per image divided by the number of LR pixels
        torch.testing.assert_close(out["kl"], out["kl_per_image"] / (37 * 53))
    elif variant == "deterministic":
        assert out["kl"] == 0 and "club" not in out
        torch.testing.assert_close(out["loss"], out["rec"])
    else:
        # lam is CLUB's own weight, not multiplied by beta_t
        torch.testing.assert_close(out["loss"], out["rec"] + 0.5 * out["club"])
    out["loss"].backward()
    grads = [p.grad for p in model.representation_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    if variant == "deterministic_club":
        # The main loss leaves q alone; club_step trains q and only q.
        assert all(p.grad is None for p in model.club_parameters())
        model.zero_grad(set_to_none=True)
        model.club_step(lr, hr, generator=generator).backward()
        assert all(p.grad is not None for p in model.club_parameters())
        assert all(p.grad is None for p in model.representation_parameters())
    else:
        with pytest.raises(ConfigError):
            model.club_step(lr, hr)


def _loss_and_grads(model, lr, hr, step, seed):
    model.zero_grad(set_to_none=True)
    out = model(lr, hr, step, generator=torch.Generator().manual_seed(seed))
    out["loss"].backward()
    return out, [p.grad.clone() for p in model.representation_parameters()]


@pytest.mark.parametrize("variant", ["savl", "deterministic_club"])
@pytest.mark.parametrize("target", ["pixel", "element"])
def test_literal_reduction_is_the_converted_objective_times_a_constant(generator, variant, target):
    # Eq. 7 + Eq. 13 summed per image, beta (or lam) = w, equals (3 h w) x the `target` loss with the weight
    # from convert_beta, term by term and in every gradient; the same model weights and the same noise draw.
    torch.manual_seed(0)
    lr = torch.rand(2, 3, 9, 11, generator=generator, dtype=torch.float64)
    hr = torch.rand(2, 3, 36, 44, generator=generator, dtype=torch.float64)
    w, m = 3e-2, 8  # smoke code_dim
    w_t = convert_beta(w, "literal", target, code_dim=m)
    weights = {"beta_final": w} if variant == "savl" else {"lam": w}
    weights_t = {"beta_final": w_t} if variant == "savl" else {"lam": w_t}
    lit = SAVL.build("smoke", variant=variant, reduction="literal", anneal_steps=0, **weights).double()
    other = SAVL.build("smoke", variant=variant, reduction=target, anneal_steps=0, **weights_t).double()
    other.load_state_dict(lit.state_dict())
    a, ga = _loss_and_grads(lit, lr, hr, 5, seed=1)
    b, gb = _loss_and_grads(other, lr, hr, 5, seed=1)
    factor = 3 * 9 * 11
    torch.testing.assert_close(a["rec"], factor * b["rec"])
    torch.testing.assert_close(a["loss"], factor * b["loss"])
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, factor * y)
    if variant == "savl":
        torch.testing.assert_close(a["kl"], a["kl_per_image"])  # literal: the per-image sum of Eq. 7


def test_eval_mode_uses_the_posterior_mean(generator):
    torch.manual_seed(0)
    model = SAVL.build("smoke").eval()
    lr, hr = torch.rand(1, 3, 8, 8, generator=generator), torch.rand(1, 3, 32, 32, generator=generator)
    a = model(lr, hr, 0, generator=torch.Generator().manual_seed(1))["y_hat"]
    b = model(lr, hr, 0, generator=torch.Generator().manual_seed(2))["y_hat"]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, model.decoder(hr, model.encode(lr).mean))
    model.train()
    c = model(lr, hr, 0, generator=torch.Generator().manual_seed(1))["y_hat"]
    assert not torch.allclose(a, c)


@pytest.mark.slow
def test_smoke_model_overfits_one_pair_and_beta_follows_schedule(generator):
    torch.manual_seed(0)
    hr = _smooth_hr(generator)
    lr = F.avg_pool2d(kornia.filters.gaussian_blur2d(hr, (7, 7), (1.5, 1.5)), 4)
    lr = lr + 0.03 * torch.randn(lr.shape, generator=generator)  # a fixed noise pattern to reproduce
    model = SAVL.build("smoke", beta_final=5e-4, anneal_steps=60)
    schedule = KLSchedule(5e-4, 60)
    opt = torch.optim.Adam(model.representation_parameters(), lr=2e-3)
    recs = []
    for step in range(150):
        out = model(lr, hr, step, generator=generator)
        assert out["beta"].item() == pytest.approx(schedule(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        recs.append(out["rec"].item())
    first, last = sum(recs[:5]) / 5, sum(recs[-5:]) / 5
    assert last < 0.5 * first, (first, last)


@pytest.mark.slow
def test_decoder_needs_the_encoded_code_after_brief_training(generator):
    # One HR content, two degradations (sharp / blurred + low contrast): the HR image alone cannot tell which
    # LR to produce, so after training the encoded code must beat the zero (prior-mean) code and the swapped one.
    torch.manual_seed(0)
    hr = _smooth_hr(generator).expand(2, -1, -1, -1)
    sharp = F.avg_pool2d(hr[:1], 4)
    hazy = F.avg_pool2d(kornia.filters.gaussian_blur2d(hr[1:], (13, 13), (3.0, 3.0)), 4) * 0.6 + 0.2
    lr = torch.cat([sharp, hazy])
    model = SAVL.build("smoke", anneal_steps=100)
    opt = torch.optim.Adam(model.representation_parameters(), lr=2e-3)
    for step in range(150):
        loss = model(lr, hr, step, generator=generator)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        code = model.encode(lr).mean
        err = lambda c: (model.decoder(hr, c) - lr).abs().mean().item()  # noqa: E731
        encoded, zero, swapped = err(code), err(torch.zeros_like(code)), err(code.flip(0))
        # swap(): A's content with B's degradation code is the decoder on B's code
        torch.testing.assert_close(model.swap(hr[:1], lr[1:]), model.decoder(hr[:1], code[1:]))
    assert encoded < 0.5 * zero and encoded < 0.5 * swapped, (encoded, zero, swapped)


def test_swap_resizes_the_code_to_the_content(generator):
    torch.manual_seed(0)
    model = SAVL.build("smoke").eval()
    out = model.swap(torch.rand(1, 3, 40, 24, generator=generator), torch.rand(1, 3, 7, 9, generator=generator))
    assert out.shape == (1, 3, 10, 6)


def test_configuration_errors():
    enc, dec = AmortizedEncoder(EncoderConfig.smoke()), Decoder(DecoderConfig.smoke())
    with pytest.raises(ConfigError, match="variant"):
        SAVL(enc, dec, variant="vae")
    with pytest.raises(ConfigError, match="deterministic encoder"):
        SAVL(enc, dec, variant="deterministic")
    with pytest.raises(ConfigError, match="code_dim"):
        SAVL(enc, Decoder(DecoderConfig(code_dim=4, channels=8, num_blocks=1, growth=4)))
    with pytest.raises(ConfigError, match="rec"):
        SAVL(enc, dec, rec="l3")
    with pytest.raises(ConfigError, match="profile"):
        SAVL.build("large")
    with pytest.raises(ConfigError, match="reduction"):
        SAVL.build("smoke", reduction="sum")
    with pytest.raises(ConfigError, match="lam > 0"):
        SAVL.build("smoke", variant="deterministic_club", lam=0.0)  # no regulariser left
    # unset, the CLUB weight is the savl variant's final KL weight, and the saved config records it
    assert SAVL.build("smoke", variant="deterministic_club", beta_final=2e-3).config.lam == 2e-3
    assert SAVL.build("smoke").config.lam == 0.0
    with pytest.raises(ConfigError, match="needs lam = 0"):
        SAVL.build("smoke", lam=0.5)  # the savl variant's weight is beta_final; lam would be ignored


def test_paper_profile_sizes():
    cfg = SAVL.build("smoke").config
    assert isinstance(cfg, SAVLConfig) and cfg.variant == "savl"
    model = SAVL.build("paper")
    assert model.encoder.config.code_dim == 64 and model.decoder.config.num_blocks == 8
    assert model.kl_schedule == KLSchedule(5e-4, 50_000) and model.alpha == 1.0 and model.rec == "l1"


@pytest.mark.parametrize("variant", ["savl", "deterministic_club"])
def test_save_load_round_trip(tmp_path, generator, variant):
    torch.manual_seed(0)
    model = SAVL.build("smoke", variant=variant, lam=0.25 if variant == "deterministic_club" else 0.0, anneal_steps=7)
    path = save_model(model, tmp_path / "savl.safetensors")
    loaded = load_model(path)
    assert loaded.config == model.config
    lr, hr = torch.rand(1, 3, 8, 8, generator=generator), torch.rand(1, 3, 32, 32, generator=generator)
    model.eval()
    torch.testing.assert_close(loaded(lr, hr, 3)["loss"], model(lr, hr, 3)["loss"])
