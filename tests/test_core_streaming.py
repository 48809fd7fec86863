"""Streaming equals offline for every allowed chunking, through the spatial stage and the
latent-only path; batching and join/leave are exact."""

import numpy as np
import pytest
import torch
from core_helpers import relative_error, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrave.config import REDUCED_PRECISION_RUNTIMES
from mcrave.inference import infer_array
from mcrave.model.layers import INT8_MAX_ROWS
from mcrave.runtime import FLOAT32_RUNTIMES
from mcrave.streaming import StreamingEngine, StreamState

# measured on this tiny model: bf16 5e-3 (latents), 1.5e-4 (output); int8 8e-3, 3e-4
REDUCED_PRECISION_TOLERANCE = 2e-2


def offline(model, x, mask, seed=0, spatial=True):
    with torch.no_grad():
        mean, _ = model.encode(x, mask)
        if spatial:
            return mean, model.decode(mean, seed, x, mask)
        return mean, model.decode(mean, seed=seed)


def stream(engine, x, mask, chunks, seed=0, spatial=True):
    enc, dec = engine.new_encoder_state(1), engine.new_decoder_state(1, [seed])
    zs, ys, start = [], [], 0
    for size in chunks:
        piece = x[..., start : start + size]
        enc, z = engine.encode_step(enc, piece, mask)
        dec, y = engine.decode_step(dec, z, piece, mask) if spatial else engine.decode_step(dec, z)
        zs.append(z)
        ys.append(y)
        start += size
    return torch.cat(zs, -1), torch.cat(ys, -1)


@settings(max_examples=10, deadline=None)
@given(
    channels=st.sampled_from([1, 2, 9]),
    spatial=st.booleans(),
    runtime=st.sampled_from(FLOAT32_RUNTIMES),
    data=st.data(),
)
def test_streamed_equals_offline_for_random_chunkings(channels, spatial, runtime, data):
    model = tiny_model(channels=channels)
    engine = StreamingEngine(model, "cpu", runtime=runtime)
    frames = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=6))
    chunks = [f * model.ratio for f in frames]
    bits = data.draw(st.lists(st.booleans(), min_size=channels, max_size=channels).filter(any))
    mask = torch.tensor([bits])
    seed = data.draw(st.integers(0, 1000))
    x = torch.randn(1, channels, sum(chunks), generator=torch.Generator().manual_seed(seed)) * 0.5
    z_off, y_off = offline(model, x, mask, seed, spatial)
    z_str, y_str = stream(engine, x, mask, chunks, seed, spatial)
    assert relative_error(z_str, z_off) < 1e-4
    assert relative_error(y_str, y_off) < 1e-4


def test_batched_streams_equal_each_alone_with_join_and_leave():
    model = tiny_model(channels=2)
    engine = StreamingEngine(model, "cpu")
    r = model.ratio
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(1, 2, 6 * r, generator=g) for _ in range(3)]
    masks = [
        torch.tensor([[True, True]]),
        torch.tensor([[False, True]]),
        torch.tensor([[True, False]]),
    ]
    alone = [
        stream(engine, x, m, [2 * r] * 3, seed=i)[1] for i, (x, m) in enumerate(zip(xs, masks))
    ]

    # a server-style slot table: stream 2 joins at step 1, stream 0 leaves after step 1
    enc = StreamState.stack([engine.new_encoder_state(1) for _ in range(3)])
    dec = engine.new_decoder_state(3, [0, 1, 2])
    outs = {0: [], 1: [], 2: []}
    done = {0: 0, 1: 0, 2: 0}
    schedule = [[0, 1], [0, 1, 2], [1, 2], [2]]
    for active in schedule:
        e, d = enc.gather(active), dec.gather(active)
        x = torch.cat([xs[i][..., done[i] * 2 * r : (done[i] + 1) * 2 * r] for i in active])
        m = torch.cat([masks[i] for i in active])
        e, z = engine.encode_step(e, x, m)
        d, y = engine.decode_step(d, z, x, m)
        enc, dec = enc.scatter(active, e), dec.scatter(active, d)
        for row, i in enumerate(active):
            outs[i].append(y[row : row + 1])
            done[i] += 1
    assert [done[i] for i in range(3)] == [2, 3, 3]
    for i in range(3):
        got = torch.cat(outs[i], -1)
        assert relative_error(got, alone[i][..., : got.shape[-1]]) < 1e-4


def test_runtimes_agree_step_by_step():
    """The frozen TorchScript steps compute what the eager ones do, states included."""
    model = tiny_model(channels=2)
    x = torch.randn(1, 2, 5 * model.ratio, generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[False, True]])
    chunks = [model.ratio, 3 * model.ratio, model.ratio]
    eager = stream(StreamingEngine(model, "cpu", runtime="eager"), x, mask, chunks)
    script = stream(StreamingEngine(model, "cpu", runtime="torchscript"), x, mask, chunks)
    for a, b in zip(eager, script):
        assert relative_error(b, a) < 1e-5
    with pytest.raises(ValueError, match="runtime 'onnx'"):
        StreamingEngine(model, "cpu", runtime="onnx")


@pytest.mark.parametrize("runtime", REDUCED_PRECISION_RUNTIMES)
def test_reduced_precision_runtimes_stay_close_to_float32(runtime):
    """The opt-in bf16 and int8-weight runtimes are not equal, only close: their measured bound,
    streamed against the float32 offline model (the trained demo-stereo, 10 s of each held-out
    file at 2048: 48-58 dB SNR against float32, mss to the true channel equal to 3 decimals)."""
    model = tiny_model(channels=2)
    x = torch.randn(1, 2, 6 * model.ratio, generator=torch.Generator().manual_seed(7)) * 0.5
    mask = torch.tensor([[False, True]])
    chunks = [2 * model.ratio] * 3  # 2 latent frames a step: few-row GEMMs, the int8 kernel's
    z_low, y_low = stream(StreamingEngine(model, "cpu", runtime=runtime), x, mask, chunks)
    z_off, y_off = offline(model, x, mask)
    assert relative_error(z_low, z_off) < REDUCED_PRECISION_TOLERANCE
    assert relative_error(y_low, y_off) < REDUCED_PRECISION_TOLERANCE
    assert relative_error(y_low, y_off) > 0  # really ran in reduced precision


def test_int8_runtime_reads_the_int8_weights():
    """The int8 runtime's few-row GEMMs take the int8 copy (not only its bf16 weights), while
    many-row ones take bf16: with one latent frame per step the two runtimes differ, and with
    the rows above the int8 kernel's limit they are equal."""
    model = tiny_model(channels=2)
    x = torch.randn(1, 2, 4 * model.ratio, generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[False, True]])
    runtimes = ("torchscript-bf16", "torchscript-int8")
    engines = [StreamingEngine(model, "cpu", runtime=r) for r in runtimes]
    few = [stream(e, x, mask, [model.ratio] * 4) for e in engines]
    assert relative_error(few[1][0], few[0][0]) > 1e-5  # latents
    assert relative_error(few[1][1], few[0][1]) > 1e-5  # the missing channel
    z = torch.randn(INT8_MAX_ROWS + 1, model.cfg.latent_size, 1)
    many = [e.decode_step(e.new_decoder_state(INT8_MAX_ROWS + 1), z)[1] for e in engines]
    int8_layers = [
        [m for m in e.model.modules() if getattr(m, "int8", None) is not None] for e in engines
    ]
    assert not int8_layers[0] and len(int8_layers[1]) > 10
    torch.testing.assert_close(many[1], many[0], rtol=0, atol=0)


def test_int8_runtime_is_cpu_only():
    """Any device but the CPU is refused with one line (on "meta", which every machine has:
    the check is the same one a CUDA engine meets)."""
    with pytest.raises(ValueError, match="CPU only"):
        StreamingEngine(tiny_model(channels=2), "meta", runtime="torchscript-int8")


def test_state_split_stack_roundtrip_and_fixed_size():
    engine = StreamingEngine(tiny_model(channels=2), "cpu")
    state = engine.new_decoder_state(4, [1, 2, 3, 4])
    parts = state.split()
    assert len(parts) == 4 and all(p.batch == 1 for p in parts)
    again = StreamState.stack(parts)
    assert all(torch.equal(a, b) for a, b in zip(again.tensors, state.tensors))
    x = torch.randn(4, engine.latent_size, 3)
    moved, _ = engine.decode_step(state, x)
    assert moved.nbytes == state.nbytes  # a stream's state never grows


@pytest.mark.parametrize("bad", [0, 100, 10**9])
def test_bad_chunk_sizes_are_rejected(bad):
    engine = StreamingEngine(tiny_model(channels=1), "cpu")
    with pytest.raises(ValueError, match="multiple of"):
        engine.check_chunk(bad)


def test_infer_array_streaming_matches_offline_and_compensates_latency():
    model = tiny_model(channels=2)
    g = torch.Generator().manual_seed(3)
    audio = (torch.randn(2, 3000, generator=g) * 0.3).numpy()
    off = infer_array(model, audio, present=[1])
    for chunk in (model.ratio, 3 * model.ratio):
        assert (
            np.abs(infer_array(model, audio, present=[1], chunk=chunk) - off).max()
            <= 1e-4 * np.abs(off).max()
        )
    assert off.shape == audio.shape
    # only the present channel given: the same result
    np.testing.assert_allclose(infer_array(model, audio[1:], present=[1]), off, atol=1e-6)
    passed = infer_array(model, audio, present=[1], passthrough=True)
    np.testing.assert_array_equal(passed[1], audio[1])
    np.testing.assert_array_equal(passed[0], off[0])
    # latency: the untrimmed decoder output is the trimmed one shifted by model.latency
    x = torch.zeros(1, 2, 16 * model.ratio)
    x[..., : audio.shape[1]] = torch.from_numpy(audio)
    _, raw = offline(model, x, torch.tensor([[False, True]]))
    np.testing.assert_allclose(
        raw[0, :, model.latency : model.latency + 3000].numpy(), off, atol=1e-5
    )


def test_infer_array_rejects_bad_present_sets():
    model = tiny_model(channels=2)
    audio = np.zeros((2, 512), np.float32)
    with pytest.raises(ValueError, match="empty"):
        infer_array(model, audio, present=[])
    with pytest.raises(ValueError, match="out of range"):
        infer_array(model, audio, present=[2])
    with pytest.raises(ValueError, match="channels"):
        infer_array(model, np.zeros((3, 512), np.float32), present=[0])


@pytest.mark.skipif(
    not __import__("platform").libc_ver()[0] == "glibc", reason="the allocator setting is glibc's"
)
def test_engine_keeps_freed_memory_for_the_next_step():
    """After an engine exists, the blocks a step frees are reused by the next step. glibc's
    defaults hand a freed heap top of more than twice the largest recent block back to the
    kernel, so a step that holds several multi-MB intermediates at once faulted them all in
    again, every step (here ~8k minor faults a round)."""
    import resource

    StreamingEngine(tiny_model(channels=2), "cpu")

    def one_step() -> None:  # four 8 MB intermediates alive at once, then all freed
        held = [torch.ones(2 * 1024 * 1024) for _ in range(4)]
        del held

    one_step()  # the heap grows once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        one_step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    pages = 8 * 1024 * 1024 // resource.getpagesize()
    assert faults < 4 * pages, f"{faults} minor faults in 10 rounds of 4 x 8 MB ({pages} pages)"


def test_encoder_skips_silent_channels_exactly(monkeypatch):
    """The encoder leaves out channels whose bands are zero (absent now and no audio left in its
    contexts); through present sets that change (nothing, everything, some, nothing) its latents
    and states equal those of the full computation, and an empty set runs at all."""
    from mcrave.model.encoder import Encoder

    model = tiny_model(channels=4)
    masks = [[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    x = torch.randn(1, 4, model.ratio * 4 * len(masks), generator=torch.Generator().manual_seed(3))

    def run() -> tuple[list[torch.Tensor], StreamState]:
        engine = StreamingEngine(model, "cpu", runtime="eager")
        state, outs = engine.new_encoder_state(1), []
        for i, mask in enumerate(masks):
            piece = x[..., i * model.ratio * 4 : (i + 1) * model.ratio * 4]
            state, z = engine.encode_step(state, piece, torch.tensor([mask], dtype=torch.bool))
            outs.append(z)
        return outs, state

    skipping, skipping_state = run()
    monkeypatch.setattr(Encoder, "_audible", lambda self, present, states: torch.arange(4))
    full, full_state = run()
    for a, b in zip(skipping + list(skipping_state.tensors), full + list(full_state.tensors)):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), (a - b).abs().max()


def test_a_stream_without_audio_decodes_alike_alone_and_batched():
    """A stream that stops sending audio for a while (latent-only) decodes the same whether it
    runs alone (no audio: the latent-only path) or batched beside a spatial stream (its row: no
    channel present), also while its delay lines still hold its earlier audio, and after its
    audio returns (the decorrelator's history: with nothing present, no direct sound either way)."""
    model = tiny_model(channels=3)
    engine = StreamingEngine(model, "cpu", runtime="eager")
    r = model.ratio  # shorter than the decorrelator's memory: the delay lines matter
    steps, silent = 8, (3, 4)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, steps * r, generator=g)
    other = torch.randn(1, 3, steps * r, generator=g)
    # the other stream hears channel 0 too, so the batch reads this stream's delay line for it
    first, others = torch.tensor([[True, False, False]]), torch.tensor([[True, True, False]])
    nothing = torch.zeros(1, 3, dtype=torch.bool)
    enc, zs = engine.new_encoder_state(1), []
    for i in range(steps):
        enc, z = engine.encode_step(enc, x[..., i * r : (i + 1) * r], first)
        zs.append(z)
    alone, batched = engine.new_decoder_state(1, [0]), engine.new_decoder_state(2, [0, 1])
    for i, z in enumerate(zs):
        piece, heard = x[..., i * r : (i + 1) * r], i not in silent
        if heard:
            alone, y_alone = engine.decode_step(alone, z, piece, first)
        else:
            alone, y_alone = engine.decode_step(alone, z)
        audio = torch.cat(
            [piece if heard else torch.zeros_like(piece), other[..., i * r : (i + 1) * r]]
        )
        masks = torch.cat([first if heard else nothing, others])
        batched, y = engine.decode_step(batched, torch.cat([z, z]), audio, masks)
        assert torch.allclose(y[:1], y_alone, atol=1e-6, rtol=0), (i, (y[:1] - y_alone).abs().max())
