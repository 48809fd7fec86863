"""PQMF reconstruction and channel-projection invertibility."""

import pytest
import torch

from mcrave.dsp.pqmf import PQMF
from mcrave.dsp.projection import ChannelProjection
from mcrave.dsp.stateful import assign_state_slots


def snr_db(ref: torch.Tensor, est: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (est - ref).pow(2).sum()))


@pytest.mark.parametrize(
    ("bands", "taps", "min_snr"), [(16, 512, 55.0), (16, 256, 50.0), (8, 64, 35.0)]
)
def test_pqmf_reconstructs_with_known_delay(bands, taps, min_snr):
    torch.manual_seed(0)
    bank = PQMF(bands, taps, channels=3)
    x = torch.randn(2, 3, bands * 200)
    y = bank.synthesis(bank.analysis(x))
    d = bank.delay
    assert snr_db(x[..., :-d], y[..., d:]) > min_snr


def test_pqmf_chunked_equals_offline():
    torch.manual_seed(1)
    bank = PQMF(8, 64, channels=2)
    shapes = assign_state_slots(bank)
    x = torch.randn(1, 2, 8 * 64)
    offline = bank.synthesis(bank.analysis(x))
    states = [torch.zeros(1, *shape) for shape, _ in shapes]
    pieces, start = [], 0
    for size in (8, 24, 64, 8, 152, 256):
        chunk = x[..., start : start + size]
        pieces.append(bank.synthesizer(bank.analyzer(chunk, states), states))
        start += size
    assert start == x.shape[-1]
    torch.testing.assert_close(torch.cat(pieces, -1), offline, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("kind", "channels"), [("identity", 3), ("ms", 2), ("dct", 9), ("learned", 5)]
)
def test_projection_is_orthonormal_and_invertible(kind, channels):
    torch.manual_seed(2)
    proj = ChannelProjection(kind, channels)
    if kind == "learned":
        with torch.no_grad():
            proj.skew.normal_()
    q = proj.matrix()
    torch.testing.assert_close(q @ q.T, torch.eye(channels), atol=1e-5, rtol=0)
    x = torch.randn(2, channels, 100)
    torch.testing.assert_close(proj.inverse(proj(x)), x, atol=1e-5, rtol=1e-5)
    frozen = proj.frozen()
    torch.testing.assert_close(frozen.inverse(frozen(x)), x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(frozen(x), proj(x))


def test_mid_side_is_sum_and_difference():
    proj = ChannelProjection("ms", 2)
    x = torch.tensor([[[1.0], [0.0]]])
    torch.testing.assert_close(proj(x)[0, :, 0], torch.tensor([2**-0.5, 2**-0.5]))
