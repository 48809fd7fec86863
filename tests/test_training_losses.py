"""Unit tests of the training losses, masks, schedules and discriminator (no model needed)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mcrave.config import TrainConfig
from mcrave.training import schedules
from mcrave.training.discriminator import Discriminator, discriminator_loss, generator_losses
from mcrave.training.losses import interchannel_loss, spectral_distance, usable_scales
from mcrave.training.masking import random_masks

SR = 16000


def _noise(b: int, c: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, t, generator=torch.Generator().manual_seed(seed))


def test_spectral_distance_zero_on_identity_and_grows_with_error():
    x = _noise(2, 2, 4096)
    assert spectral_distance(x, x).item() == pytest.approx(0.0, abs=1e-6)
    small = spectral_distance(x, x + 0.01 * _noise(2, 2, 4096, 1)).item()
    large = spectral_distance(x, x + 0.5 * _noise(2, 2, 4096, 1)).item()
    assert 0 < small < large


def test_spectral_distance_is_per_item_so_batches_split_exactly():
    x, y = _noise(4, 3, 2048), _noise(4, 3, 2048, 1)
    whole = spectral_distance(x, y)
    halves = (spectral_distance(x[:2], y[:2]) + spectral_distance(x[2:], y[2:])) / 2
    torch.testing.assert_close(whole, halves)


def test_spectral_distance_handles_silent_channels_and_short_signals():
    x = torch.zeros(1, 2, 100)
    y = _noise(1, 2, 100)
    loss = spectral_distance(x, y)
    assert math.isfinite(loss.item())
    assert usable_scales(100) == (128,)
    assert usable_scales(1024) == (1024, 512, 256, 128)


def test_interchannel_loss_sees_level_and_coherence_errors():
    src = _noise(1, 1, 8192)
    panned = torch.cat([src, 0.3 * src], dim=1)  # L louder than R, fully coherent
    swapped = torch.cat([0.3 * src, src], dim=1)  # same channel spectra summed, ILD flipped
    decorrelated = torch.cat([src, 0.3 * _noise(1, 1, 8192, 5)], dim=1)
    assert interchannel_loss(panned, panned, SR).item() == pytest.approx(0.0, abs=1e-6)
    ild_error = interchannel_loss(panned, swapped, SR).item()
    icc_error = interchannel_loss(panned, decorrelated, SR).item()
    assert ild_error > 0.5  # ~10.5 dB flipped -> ~2.1 units
    assert icc_error > 0.3  # coherence drops from 1 to ~0
    assert interchannel_loss(src, src * 0.5, SR).item() == 0.0  # one channel: no pairs


def test_interchannel_loss_is_differentiable_and_per_item():
    x, y = _noise(4, 3, 4096), _noise(4, 3, 4096, 1).requires_grad_()
    loss = interchannel_loss(x, y, SR)
    loss.backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    halves = (interchannel_loss(x[:2], y[:2], SR) + interchannel_loss(x[2:], y[2:], SR)) / 2
    torch.testing.assert_close(loss, halves)


@pytest.mark.parametrize("channels", [1, 2, 4, 8])
def test_masks_keep_at_least_one_channel(channels):
    masks = random_masks(500, channels, TrainConfig(), torch.Generator().manual_seed(0))
    assert masks.shape == (500, channels) and masks.dtype == torch.bool
    assert (masks.sum(dim=1) >= 1).all()


def test_mask_kinds_follow_the_config_probabilities():
    gen = torch.Generator().manual_seed(1)
    only_single = dataclasses.replace(TrainConfig(), mask_p_all=0, mask_p_single=1, mask_p_subset=0)
    assert (random_masks(200, 4, only_single, gen).sum(dim=1) == 1).all()
    only_all = dataclasses.replace(TrainConfig(), mask_p_all=1, mask_p_single=0, mask_p_subset=0)
    assert random_masks(50, 4, only_all, gen).all()
    only_subset = dataclasses.replace(TrainConfig(), mask_p_all=0, mask_p_single=0, mask_p_subset=1)
    counts = random_masks(400, 4, only_subset, gen).sum(dim=1)
    assert set(counts.tolist()) == {1, 2, 3}
    mixed = random_masks(
        4000, 4, TrainConfig(mask_p_all=0.5, mask_p_single=0.5, mask_p_subset=0), gen
    )
    share_all = mixed.all(dim=1).float().mean().item()
    assert 0.45 < share_all < 0.55
    # every channel gets dropped sometimes
    assert (~mixed).any(dim=0).all()


def test_masks_are_reproducible_from_the_seed_and_reject_bad_config():
    a = random_masks(32, 4, TrainConfig(), torch.Generator().manual_seed(7))
    b = random_masks(32, 4, TrainConfig(), torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    bad = TrainConfig(mask_p_all=0, mask_p_single=0, mask_p_subset=0)
    with pytest.raises(ValueError, match="mask probabilities"):
        random_masks(2, 2, bad, torch.Generator())


def test_schedules():
    cfg = TrainConfig(phase1_steps=100, kl_warmup_steps=10, d_every=4)
    assert schedules.kl_beta(0, cfg) == pytest.approx(cfg.kl_beta_start)
    assert schedules.kl_beta(5, cfg) == pytest.approx(
        math.sqrt(cfg.kl_beta_start * cfg.kl_beta_max)
    )
    assert schedules.kl_beta(10, cfg) == schedules.kl_beta(10**6, cfg) == cfg.kl_beta_max
    assert schedules.generator_lr(0, cfg) == pytest.approx(cfg.lr)
    assert schedules.generator_lr(50, cfg) == pytest.approx((cfg.lr + cfg.lr_end) / 2)
    assert schedules.generator_lr(100, cfg) == schedules.generator_lr(500, cfg) == cfg.lr_end
    assert not schedules.is_adversarial(99, cfg) and schedules.is_adversarial(100, cfg)
    d_steps = [s for s in range(90, 112) if schedules.is_discriminator_step(s, cfg)]
    assert d_steps == [100, 104, 108]


def test_discriminator_judges_channels_jointly():
    torch.manual_seed(0)
    disc = Discriminator(channels=2, capacity=4)
    x = _noise(2, 2, 4096)
    out = disc(x)
    assert len(out) == 5 + 3
    assert [len(f) for f in out] == [6] * 5 + [7] * 3  # 4 stride-4 layers each
    y = x.clone()
    y[:, 1] = 0  # changing only channel 1 changes every sub-discriminator's logits
    out_y = disc(y)
    assert all(not torch.equal(a[-1], b[-1]) for a, b in zip(out, out_y, strict=True))


def test_hinge_and_feature_matching():
    torch.manual_seed(0)
    disc = Discriminator(channels=3, capacity=4)
    real, fake = _noise(2, 3, 2048), _noise(2, 3, 2048, 1).requires_grad_()
    d_real, d_fake = disc(real), disc(fake)
    adv, fm = generator_losses(d_real, disc(real))
    assert fm.item() == pytest.approx(0.0, abs=1e-6)
    adv, fm = generator_losses(d_real, d_fake)
    assert fm.item() > 0
    (adv + fm).backward()
    assert fake.grad.abs().sum() > 0
    # hinge: logits beyond the margin cost nothing
    margin = [[torch.full((2, 1, 4), 2.0)]]
    assert discriminator_loss(margin, [[-x for x in margin[0]]]).item() == 0.0
    assert discriminator_loss([[torch.zeros(2, 1, 4)]], [[torch.zeros(2, 1, 4)]]).item() == 2.0


def test_spectral_distance_groups_share_a_level():
    # a near-empty band next to a loud one: grouped, its error is measured against the group level
    x = torch.cat([_noise(1, 1, 2048), 1e-6 * _noise(1, 1, 2048, 2)], dim=1)
    y = torch.cat([x[:, :1], 1e-3 * _noise(1, 1, 2048, 3)], dim=1)
    alone, grouped = spectral_distance(x, y), spectral_distance(x, y, groups=1)
    assert grouped < alone
    silent = torch.zeros(1, 2, 2048)
    silent[:, 0] = _noise(1, 1, 2048)[:, 0]
    assert spectral_distance(silent, silent + 1e-3).item() < 100
