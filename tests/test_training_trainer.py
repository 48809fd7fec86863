"""In-process checks of the training step: alignment, what each phase updates."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from training_helpers import write_dataset

from mcrave.config import preset
from mcrave.data.dataset import CropDataset
from mcrave.training.distributed import DistInfo
from mcrave.training.trainer import RunOptions, Trainer


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    torch.set_num_threads(1)
    root = write_dataset(tmp_path_factory.mktemp("ds"))
    cfg = preset("test", channels=2, sample_rate=16000)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, phase1_steps=2, d_every=2))
    crops = CropDataset(root, "train", cfg.train.crop_frames, seed=0, augment=True)
    run = tmp_path_factory.mktemp("run")
    return Trainer(cfg, crops, None, RunOptions(run, 10), DistInfo(), torch.device("cpu"))


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_a_delayed_copy_is_aligned_and_costs_nothing(trainer):
    x = torch.randn(2, 2, 8192) * 0.1
    lat = trainer.model.decoded_latency
    delayed = torch.nn.functional.pad(x, (lat, 0))[..., : x.shape[-1]]
    a, b = trainer._aligned(x, delayed)
    assert torch.equal(a, b) and a.shape[-1] % trainer.cfg.model.bands == 0
    losses = trainer._reconstruction(a, b)
    assert all(v.item() == pytest.approx(0.0, abs=1e-5) for v in losses.values())
    # the spatial stage's output lags by the total latency; its losses see it aligned too
    total = trainer.model.latency
    spatial_out = torch.nn.functional.pad(x, (total, 0))[..., : x.shape[-1]]
    masks = torch.tensor([[False, True], [True, False]])
    losses = trainer._spatial_losses(x, spatial_out, masks)
    assert all(v.item() == pytest.approx(0.0, abs=1e-4) for v in losses.values())


def test_coded_rows_let_the_encoder_see_every_channel(trainer):
    trainer.tc = dataclasses.replace(trainer.tc, coded_p=1.0)
    try:
        masks, encoder_masks, _, _ = trainer._draws(5, 4)
    finally:
        trainer.tc = trainer.cfg.train
    assert encoder_masks.all() and not masks.all()
    masks_again, plain, _, _ = trainer._draws(5, 4)
    assert torch.equal(masks, masks_again) and torch.equal(plain, masks)  # coded_p = 0


def test_frozen_codec_trains_only_the_spatial_stage(trainer):
    trainer.tc = dataclasses.replace(trainer.tc, train_codec=False)
    stage = trainer.model.decoder.spatial
    before = _snapshot(trainer.model)
    try:
        losses = trainer.train_step(4)
    finally:
        trainer.tc = trainer.cfg.train
        trainer.model.requires_grad_(True)
    assert set(losses) == {"loss", "spatial_spectral", "spatial_side", "spatial_interchannel"}
    after = trainer.model.state_dict()
    changed = {k for k, v in after.items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith("decoder.spatial.") for k in changed)
    assert stage is trainer.model.decoder.spatial


def test_each_phase_updates_the_right_parts(trainer):
    # phase 1: encoder and decoder learn, the discriminator is untouched
    enc, dec, disc = (
        _snapshot(m) for m in (trainer.model.encoder, trainer.model.decoder, trainer.disc)
    )
    losses = trainer.train_step(0)
    assert {"spectral", "multiband", "interchannel", "kl"} <= losses.keys()
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert _changed(enc, trainer.model.encoder) and _changed(dec, trainer.model.decoder)
    assert not _changed(disc, trainer.disc)
    # phase 2, step 2: discriminator step only
    trainer.train_step(1)
    gen, disc = _snapshot(trainer.model), _snapshot(trainer.disc)
    assert set(trainer.train_step(2)) == {"discriminator"}
    assert _changed(disc, trainer.disc) and not _changed(gen, trainer.model)
    # phase 2, step 3: decoder step with the encoder frozen
    enc, dec, disc = (
        _snapshot(m) for m in (trainer.model.encoder, trainer.model.decoder, trainer.disc)
    )
    losses = trainer.train_step(3)
    assert {"adversarial", "feature_matching"} <= losses.keys() and "kl" not in losses
    assert not _changed(enc, trainer.model.encoder) and not _changed(disc, trainer.disc)
    assert _changed(dec, trainer.model.decoder)


def test_spatial_losses_split_exactly_over_data_parallel_ranks(trainer):
    """2 ranks x 2 rows average to 1 process x 4 rows: every term is a mean of per-row values."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 2, 8192, generator=g) * 0.1
    y = torch.randn(4, 2, 8192, generator=g) * 0.1
    masks = torch.tensor([[False, True], [True, True], [True, False], [False, True]])
    whole = trainer._spatial_losses(x, y, masks)
    halves = [trainer._spatial_losses(x[s], y[s], masks[s]) for s in (slice(0, 2), slice(2, 4))]
    for key, value in whole.items():
        assert value.item() == pytest.approx((halves[0][key] + halves[1][key]).item() / 2, rel=1e-5)
