"""Whole-signal inference: feed the present channels, get all N back, aligned and trimmed.

This is the reference path that the CLI, the evaluation and the services' parity tests share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mcrave.model import MCRave
from mcrave.present import check_present
from mcrave.streaming import StreamingEngine


def place_channels(audio: np.ndarray, present: list[int], channels: int) -> np.ndarray:
    """[C, T] with C == N (all channels) or C == len(present) (present ones, ascending) -> [N, T]."""
    if audio.ndim != 2:
        raise ValueError(f"expected audio shaped [channels, samples], got {audio.shape}")
    if audio.shape[0] == channels:
        return audio.astype(np.float32, copy=False)
    if audio.shape[0] == len(present):
        full = np.zeros((channels, audio.shape[1]), np.float32)
        full[present] = audio
        return full
    raise ValueError(
        f"input has {audio.shape[0]} channels; the model needs {channels} "
        f"(all) or {len(present)} (one per present channel)"
    )


def infer_array(
    model: MCRave | StreamingEngine,
    audio: np.ndarray,
    present: Sequence[int] | None = None,
    chunk: int | None = None,
    passthrough: bool = False,
    progress: bool = False,
    latent_only: bool = False,
    coded: bool = False,
) -> np.ndarray:
    """Infer all N channels of `audio` ([N, T] or [len(present), T]) -> [N, T] float32.

    The output is latency-compensated and trimmed to T (the decoder tail is flushed with silence).
    The signal streams through the engine in chunks of `chunk` samples (a multiple of the ratio;
    default `engine.offline_chunk`), which equals one offline pass to float tolerance and keeps
    memory bounded for long or many-channel files.
    The missing channels come from the spatial stage (built from the present channels' audio);
    `latent_only` decodes every channel from the latents alone, as models without the stage do.
    `coded` is the codec case: the encoder sees all N channels of `audio` (the latents of
    everything travel) while the spatial stage gets only the present channels' audio.
    With `passthrough`, present channels are copied from the input and only missing ones decoded.
    """
    engine = model if isinstance(model, StreamingEngine) else StreamingEngine(model)
    n = engine.channels
    chosen = list(range(n) if present is None else check_present(present, n))
    audio = np.asarray(audio)
    if coded and audio.shape[0] != n:
        raise ValueError(f"coded inference encodes all {n} channels; got {audio.shape[0]}")
    t = audio.shape[1]
    needed = t + engine.latency
    step = (
        chunk
        if chunk is not None
        else min(engine.offline_chunk, -(-needed // engine.ratio) * engine.ratio)
    )
    engine.check_chunk(step)
    mask = torch.zeros(1, n, dtype=torch.bool)
    mask[0, chosen] = True
    encoder_mask = torch.ones_like(mask) if coded else mask
    enc, dec = engine.new_encoder_state(1), engine.new_decoder_state(1)
    # chunks are placed and written one at a time: no whole-file copies beyond the output
    out = np.zeros((n, t), np.float32)
    decoded_rows = [c for c in range(n) if not (passthrough and c in chosen)]
    starts = range(0, needed, step)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, unit="chunk", desc="infer")
    for start in starts:
        piece = np.zeros((n, step), np.float32)
        placed = place_channels(audio[:, start : start + step], chosen, n)
        piece[:, : placed.shape[1]] = placed
        if passthrough:  # present channels copied from the input, sample for sample
            out[chosen, start : start + placed.shape[1]] = placed[chosen]
        chunk_audio = torch.from_numpy(piece)[None]
        enc, z = engine.encode_step(enc, chunk_audio, encoder_mask)
        if latent_only:
            dec, y = engine.decode_step(dec, z)
        else:
            dec, y = engine.decode_step(dec, z, chunk_audio, mask)
        # output sample s of this chunk is input sample start + s - latency
        lo, hi = max(start, engine.latency), min(start + step, needed)
        if hi > lo:
            decoded = y[0, :, lo - start : hi - start].cpu().numpy()
            out[decoded_rows, lo - engine.latency : hi - engine.latency] = decoded[decoded_rows]
    return out
