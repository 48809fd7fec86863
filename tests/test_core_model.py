"""The masked VAE: shapes, absent-channel invariance, presets."""

import dataclasses
import math

import torch
from core_helpers import tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrave.config import preset
from mcrave.model import MCRave


def test_shapes_and_kl():
    model = tiny_model(channels=3)
    x = torch.randn(2, 3, 4 * model.ratio)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    out = model(x, mask, seed=torch.tensor([1, 2]))
    assert out["out"].shape == x.shape
    assert out["mean"].shape == (2, model.latent_size, 4)
    assert out["kl"].shape == (2,) and bool((out["kl"] >= 0).all())


@settings(max_examples=6, deadline=None)
@given(channels=st.sampled_from([1, 2, 9]), data=st.data())
def test_absent_channels_have_no_influence(channels, data):
    model = tiny_model(channels=channels)
    mask_bits = data.draw(st.lists(st.booleans(), min_size=channels, max_size=channels).filter(any))
    mask = torch.tensor([mask_bits])
    seed = data.draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, 3 * model.ratio, generator=g)
    y = x.clone()
    absent = ~mask[0]
    y[0, absent] = torch.randn(int(absent.sum()), x.shape[-1], generator=g) * 10
    if absent.any():
        y[0, int(absent.nonzero()[0, 0]), 5] = float("nan")
    with torch.no_grad():
        mx, sx = model.encode(x, mask)
        my, sy = model.encode(y, mask)
    assert torch.equal(mx, my) and torch.equal(sx, sy)


def test_latent_frame_sees_its_whole_block_and_nothing_later():
    """Frame f must hear its own block (else the decoder has to predict it) but no later sample.

    The convolutional path misses the PQMF analysis' last hop (bands - 1 samples) of the block; the
    band-level cues (a plain STFT frame ending with the block) hear all of it."""
    for cues in (False, True):
        torch.manual_seed(0)
        cfg = dataclasses.replace(preset("test", channels=2).model, cue_latents=4 if cues else 0)
        model = MCRave(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        r, f = model.ratio, 2
        x = torch.randn(1, 2, 5 * r, requires_grad=True)
        mean, _ = model.encode(x, torch.tensor([[True, True]]))
        mean[0, :, f].sum().backward()
        heard = torch.nonzero(x.grad[0].abs().sum(0)).flatten()
        last = (f + 1) * r - (1 if cues else model.cfg.bands)
        assert int(heard.max()) == last


def test_mask_changes_latents():
    model = tiny_model(channels=2)
    x = torch.randn(1, 2, 2 * model.ratio)
    with torch.no_grad():
        both, _ = model.encode(x, torch.tensor([[True, True]]))
        right, _ = model.encode(x, torch.tensor([[False, True]]))
    assert not torch.allclose(both, right)


def test_v2_preset_matches_rave_v2_size():
    cfg = preset("v2", channels=1).model
    assert (cfg.bands, cfg.strides, cfg.ratio, cfg.latent_size) == (16, (4, 4, 4, 2), 2048, 128)
    params = sum(p.numel() for p in MCRave(cfg).parameters())
    assert abs(params / 31.5e6 - 1) < 0.15, params


def test_noise_is_seeded():
    model = tiny_model(channels=2)
    z = torch.randn(1, model.latent_size, 4)
    with torch.no_grad():
        a, b, c = model.decode(z, seed=3), model.decode(z, seed=3), model.decode(z, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_runs_on_cuda_when_present():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = tiny_model(channels=2).to(device)
    x = torch.randn(1, 2, model.ratio, device=device)
    assert model(x, torch.ones(1, 2, dtype=torch.bool, device=device))["out"].device.type == device


def test_cue_latents_carry_band_level_differences_from_the_start():
    """The conv path's latents are those of the same encoder without cues; the cue dims add the
    channels' band level differences: 6 dB more on L moves every L-group cue dim by
    LEVEL_SCALE * (6.02 dB / 10 / 3) / 2 (the mean over the two present channels moves by half)."""
    from mcrave.model.cues import LEVEL_SCALE

    base = preset("test", channels=2).model
    plain = MCRave(dataclasses.replace(base, cue_latents=0)).eval()
    cued = MCRave(base).eval()
    missing, _ = cued.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(k.startswith(("encoder.cues.", "decoder.spatial.cue_")) for k in missing)
    cue = base.cue_latents
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6 * cued.ratio)
    louder = x * torch.tensor([2.0, 1.0])[None, :, None]
    both = torch.tensor([[True, True]])
    with torch.no_grad():
        offsets = [cued.encode(a, both)[0] - plain.encode(a, both)[0] for a in (x, louder)]
    assert torch.equal(offsets[0][:, :-cue], torch.zeros_like(offsets[0][:, :-cue]))
    expected = LEVEL_SCALE * (20 * math.log10(2) / 10 / 3) / 2
    shift = (offsets[1] - offsets[0])[:, -cue:, 1:]  # frame 0 also hears the zero context
    torch.testing.assert_close(shift, torch.full_like(shift, expected), atol=1e-3, rtol=0)


def test_widen_latents_keeps_the_codec(tmp_path):
    """scripts/widen_latents.py on a real checkpoint: the old latent dims and the generative
    decoder's output stay exactly what they were; the new dims are the cue branch's."""
    import subprocess
    import sys
    from pathlib import Path

    from mcrave.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    old = MCRave(dataclasses.replace(preset("test", channels=2).model, cue_latents=0))
    with torch.no_grad():
        for p in old.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(tmp_path / "old.ckpt", old)
    script = Path(__file__).parents[1] / "scripts" / "widen_latents.py"
    args = [str(tmp_path / "old.ckpt"), str(tmp_path / "wide.ckpt"), "--cue-latents", "4"]
    run = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    wide, _ = load_model(tmp_path / "wide.ckpt")
    old.eval()
    assert (wide.latent_size, wide.cfg.cue_latents) == (12, 4)
    x = torch.randn(1, 2, 6 * old.ratio)
    both = torch.tensor([[True, True]])
    with torch.no_grad():
        mean_old, scale_old = old.encode(x, both)
        mean_wide, scale_wide = wide.encode(x, both)
        # equal up to float summation order (a wider GEMM)
        torch.testing.assert_close(mean_wide[:, :8], mean_old, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(scale_wide[:, :8], scale_old, rtol=1e-6, atol=1e-7)
        cues = wide.encoder.cues(x, both[0:1], wide.initial_states("encoder", 1))
        torch.testing.assert_close(mean_wide[:, 8:], cues)
        torch.testing.assert_close(wide.decode_latent(mean_wide, 3), old.decode_latent(mean_old, 3))
