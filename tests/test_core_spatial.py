"""The spatial stage: starts at the copy baseline, passes present channels through, never reads
a missing channel, keeps finite gradients on silence, and trains alone on a frozen codec."""

import numpy as np
import pytest
import torch
from core_helpers import tiny_model

from mcrave.config import preset
from mcrave.dsp.bands import erb_band_index
from mcrave.inference import infer_array
from mcrave.model import MCRave
from mcrave.training.losses import band_level_loss, interchannel_loss, spectral_distance


def untrained(channels: int) -> MCRave:
    torch.manual_seed(0)
    return MCRave(preset("test", channels=channels).model).eval()


def aligned_output(model, x, mask):
    with torch.no_grad():
        mean, _ = model.encode(x, mask)
        y = model.decode(mean, 0, x, mask)
    lat = model.latency
    return x[..., : x.shape[-1] - lat], y[..., lat:]


@pytest.mark.parametrize("channels,present", [(2, [1]), (2, [0]), (4, [0, 2]), (12, [0, 5, 11])])
def test_untrained_stage_outputs_the_mean_of_the_present_channels(channels, present):
    model = untrained(channels)
    x = torch.randn(1, channels, 8 * model.ratio, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, channels, dtype=torch.bool)
    mask[0, present] = True
    truth, y = aligned_output(model, x, mask)
    mean = truth[:, present].mean(1)
    for c in range(channels):
        if c in present:  # passes through, to float tolerance (STFT analysis + synthesis)
            assert (y[:, c] - truth[:, c]).abs().max() < 1e-5
        else:  # the copy baseline, up to the nearly shut decoder gate and fill
            assert (y[:, c] - mean).norm() / mean.norm() < 0.1


def test_missing_channels_are_never_read():
    model = tiny_model(channels=4)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 6 * model.ratio, generator=g)
    mask = torch.tensor([[True, False, True, False]])
    garbage = x.clone()
    garbage[:, 1] = float("nan")
    garbage[:, 3] = 1e6
    _, clean = aligned_output(model, x, mask)
    _, dirty = aligned_output(model, garbage, mask)
    assert torch.equal(clean, dirty)


def test_no_channel_present_is_the_latent_only_path():
    model = tiny_model(channels=2)
    z = torch.randn(1, model.latent_size, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        generated = model.decode_latent(z)
        through = model.decode(z)  # no audio: every channel comes from the decoder
    shift = model.latency - model.decoded_latency
    n = generated.shape[-1] - shift
    assert (through[..., shift:] - generated[..., :n]).abs().max() < 1e-5


def test_spatial_path_differs_from_latent_only_in_inference():
    model = tiny_model(channels=2)
    audio = np.random.default_rng(4).standard_normal((2, 4 * model.ratio)).astype(np.float32)
    spatial = infer_array(model, audio, present=[1])
    latent = infer_array(model, audio, present=[1], latent_only=True)
    coded = infer_array(model, audio, present=[1], coded=True)
    np.testing.assert_allclose(spatial[1], audio[1], atol=1e-5)  # present R passes through
    assert np.abs(spatial - latent).max() > 1e-3 and np.abs(coded - spatial).max() > 1e-6
    with pytest.raises(ValueError, match="encodes all"):
        infer_array(model, audio[1:], present=[1], coded=True)


def test_gradients_stay_finite_on_digital_silence():
    model = tiny_model(channels=2).train()
    x = torch.zeros(2, 2, 16 * model.ratio)
    x[0] = torch.randn(2, 16 * model.ratio) * 0.1
    mask = torch.tensor([[False, True], [False, True]])
    out = model(x, mask)["out"]
    side = out[:, :1] - x[:, 1:]
    loss = (
        spectral_distance(x[:, :1], out[:, :1])
        + interchannel_loss(x, out, 44100)
        + band_level_loss(x[:, :1] - x[:, 1:], side, 44100)
    )
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_erb_bands_cover_every_bin_without_gaps():
    index = erb_band_index(1024, 44100, 32)
    assert len(index) == 513 and index[0] == 0
    assert set(np.diff(index)) <= {0, 1}  # monotone, no empty band
    assert 20 <= index.max() + 1 <= 32


def test_spatial_hop_must_divide_the_ratio():
    import dataclasses

    cfg = preset("test").model
    with pytest.raises(ValueError, match="spatial_hop"):
        dataclasses.replace(cfg, spatial_hop=96)


def test_codec_case_starts_with_the_band_level_differences():
    """Untrained, with cue latents: when the latents of both channels travel, the inferred L
    already has L's level relative to R (here -6 dB in every band), where copying R has 0 dB.
    Without the latents of L (only R encoded) it falls back to R's level."""
    from mcrave.evaluation.spatial import band_cues

    model = untrained(2)
    rng = np.random.default_rng(0)
    right = rng.standard_normal(40 * model.ratio).astype(np.float32) * 0.1
    stereo = np.stack([0.5 * right, right])
    coded = infer_array(model, stereo, present=[1], coded=True)
    blind = infer_array(model, stereo[[1]], present=[1])
    sr, skip = model.sample_rate, 8 * model.ratio  # after the warm-up
    for out, expected in ((coded, -6.0), (blind, 0.0)):
        ild = band_cues(out[0, skip:], out[1, skip:], sr).ild[1:-1]
        assert abs(float(np.median(ild)) - expected) < 1.0, (expected, np.median(ild))
