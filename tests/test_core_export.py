"""nn~ export: contract attributes, streaming parity with the engine, batch > 1, present flags."""

import pytest
import torch
from core_helpers import relative_error, tiny_model

from mcrave.export import LatentPCA, export_nn_tilde
from mcrave.streaming import StreamingEngine


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model(channels=3)
    path = export_nn_tilde(model, tmp_path_factory.mktemp("ts") / "m.ts")
    return model, torch.jit.load(str(path))


def test_contract_attributes(exported):
    model, ts = exported
    n, d, r = 3, model.latent_size, model.ratio
    assert ts.get_methods() == ["encode", "decode", "forward"]
    assert ts.encode_params.tolist() == [n, 1, d, r]
    assert ts.decode_params.tolist() == [d, r, n, 1]
    assert ts.forward_params.tolist() == [n, 1, n, 1]
    assert ts.encode_input_labels == ["ch0", "ch1", "ch2"] and ts.decode_output_labels == [
        "ch0",
        "ch1",
        "ch2",
    ]
    assert ts.get_attributes() == ["present"]
    assert ts.present_params.tolist() == [1, 1, 1]
    assert ts.get_present() == [1, 1, 1]


def test_present_setter_takes_one_int_per_channel(exported):
    _, ts = exported
    assert ts.set_present(0, 1, 0) == 0 and ts.get_present() == [0, 1, 0]
    assert ts.set_present(0, 0, 0) != 0 and ts.get_present() == [0, 1, 0]  # empty set refused
    assert ts.set_present(1, 1, 1) == 0


def test_streaming_parity_with_engine_batch_two(exported):
    model, ts = exported
    ts.reset()
    assert ts.set_present(0, 1, 1) == 0
    engine = StreamingEngine(model, "cpu")
    buffer = 4 * model.ratio
    x = torch.randn(2, 3, 5 * buffer, generator=torch.Generator().manual_seed(0)) * 0.3
    mask = torch.tensor([[False, True, True]] * 2)
    enc, dec = engine.new_encoder_state(2), engine.new_decoder_state(2, [0, 0])
    spatial = engine.new_decoder_state(2, [0, 0])
    for start in range(0, x.shape[-1], buffer):
        chunk = x[..., start : start + buffer]
        enc, z = engine.encode_step(enc, chunk, mask)
        dec, y = engine.decode_step(dec, z)  # `decode`: latents only
        spatial, y_spatial = engine.decode_step(spatial, z, chunk, mask)  # `forward`
        z_ts = ts.encode(chunk)
        y_ts = ts.decode(z_ts)
        f_ts = ts.forward(chunk)
        assert z_ts.dtype == torch.float32 and z_ts.shape == (
            2,
            model.latent_size,
            buffer // model.ratio,
        )
        assert relative_error(z_ts, z) < 1e-4
        assert relative_error(y_ts, y) < 1e-4
        assert relative_error(f_ts, y_spatial) < 1e-4
        # the present channels pass through `forward` (after the model's latency)
    lat = model.latency
    assert relative_error(f_ts[:, 1:, lat:], x[:, 1:, -buffer : x.shape[-1] - lat]) < 1e-4
    assert ts.set_present(1, 1, 1) == 0


def test_batch_change_restarts_caches(exported):
    _, ts = exported
    ts.reset()
    x = torch.randn(1, 3, 1024)
    a = ts.forward(x)
    b = ts.forward(torch.cat([x, x]))  # new batch size: fresh streams
    assert torch.allclose(b[0], a[0], atol=1e-6) and torch.allclose(b[1], a[0], atol=1e-6)


def test_export_ranks_latents_by_explained_variance(tmp_path):
    """With a fitted ranking, `encode` gives principal-axis latents (most variance first) and
    `decode` undoes the rotation, so the audio is what the model's own latents decode to."""
    model = tiny_model(channels=2)
    engine = StreamingEngine(model, "cpu", runtime="eager")
    g = torch.Generator().manual_seed(1)
    t = torch.arange(16 * model.ratio) / 44100.0
    tone = torch.sin(2 * torch.pi * 220 * t * (1 + t))  # a sweep: latents that move
    x = (torch.stack([tone, 0.5 * tone]) + 0.05 * torch.randn(2, t.numel(), generator=g))[None]
    mask = torch.ones(1, 2, dtype=torch.bool)
    _, z = engine.encode_step(engine.new_encoder_state(1), x, mask)
    pca = LatentPCA.fit(z)
    assert torch.all(pca.explained[:-1] >= pca.explained[1:] - 1e-6)
    assert abs(float(pca.explained.sum()) - 1) < 1e-5
    eye = torch.eye(model.latent_size)
    assert torch.allclose(pca.components @ pca.components.T, eye, atol=1e-5)
    ts = torch.jit.load(str(export_nn_tilde(model, tmp_path / "m.ts", pca=pca)))
    z_ts = ts.encode(x)
    assert relative_error(z_ts, pca.rotate(z)) < 1e-4
    spread = z_ts[0].var(dim=-1)
    assert torch.all(spread[:-1] >= spread[1:] - 1e-5)  # dimension 0 moves the most
    _, y = engine.decode_step(engine.new_decoder_state(1, [0]), z)
    assert relative_error(ts.decode(z_ts), y) < 1e-4
    assert ts.encode_output_labels[0].startswith("latent 0 (")


def test_int8_export_streams_like_the_int8_engine(tmp_path):
    """`precision="int8"` (mcrave export --precision int8): the .ts runs what the engine's
    torchscript-int8 runtime runs, saved and reloaded; not float32 (libtorch 2.5.1 parity:
    bench/check_nn_compat.sh --precision int8)."""
    model = tiny_model(channels=2)
    ts = torch.jit.load(str(export_nn_tilde(model, tmp_path / "int8.ts", precision="int8")))
    engines = {
        r: StreamingEngine(model, "cpu", runtime=r) for r in ("torchscript", "torchscript-int8")
    }
    states = {r: (e.new_encoder_state(1), e.new_decoder_state(1)) for r, e in engines.items()}
    x = torch.randn(1, 2, 4 * model.ratio, generator=torch.Generator().manual_seed(1)) * 0.3
    mask = torch.ones(1, 2, dtype=torch.bool)
    float32 = []
    for start in range(0, x.shape[-1], model.ratio):  # one latent frame a buffer: int8 GEMMs
        chunk = x[..., start : start + model.ratio]
        y_ts = ts.decode(ts.encode(chunk))
        out = {}
        for runtime, engine in engines.items():
            enc, dec = states[runtime]
            enc, z = engine.encode_step(enc, chunk, mask)
            dec, out[runtime] = engine.decode_step(dec, z)
            states[runtime] = (enc, dec)
        assert relative_error(y_ts, out["torchscript-int8"]) < 1e-5
        float32.append(relative_error(y_ts, out["torchscript"]))
    # over the stream: the first buffer is still all zeros (the spatial stage's delay)
    assert max(float32) > 1e-5
