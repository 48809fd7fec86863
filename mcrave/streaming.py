"""Streaming engine: explicit per-stream state, batched steps, join/leave between steps.

A stream's state is a `StreamState`: a fixed-size list of tensors with the batch first (conv
contexts, overlap-add tails, the noise seed and sample position). Nothing hides in module
buffers, so one engine serves any number of streams: a server gathers the states of the streams
that have a chunk ready, runs one batched step and scatters the new states back. The cost of a
step depends only on its chunk size and batch, never on how long a stream has run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mcrave.config import DEFAULT_RUNTIME
from mcrave.memory import retain_freed_memory
from mcrave.model import MCRave
from mcrave.model.layers import remove_weight_norm
from mcrave.runtime import step_modules

# channels x latent frames per offline step: a step's intermediates grow with both (~0.5 MB per
# channel-frame at cpu-small with the spatial stage), so at large N offline steps get shorter
OFFLINE_CHANNEL_FRAMES = 512
MAX_CHUNK_FRAMES = (
    64  # latent frames per step; bounds a step's memory and a server's work per message
)


@dataclass(frozen=True)
class StreamState:
    """States of B streams; index i along dim 0 of every tensor belongs to stream i."""

    tensors: tuple[Tensor, ...]

    @property
    def batch(self) -> int:
        return self.tensors[0].shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    def gather(self, index: Sequence[int] | Tensor) -> StreamState:
        """The states of the streams at `index`, in that order."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.tensors[0].device)
        return StreamState(tuple(t.index_select(0, idx) for t in self.tensors))

    def scatter(self, index: Sequence[int] | Tensor, part: StreamState) -> StreamState:
        """A copy with the streams at `index` replaced by `part` (same order)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.tensors[0].device)
        return StreamState(
            tuple(t.index_copy(0, idx, p) for t, p in zip(self.tensors, part.tensors, strict=True))
        )

    @staticmethod
    def stack(states: Sequence[StreamState]) -> StreamState:
        """Join single- or multi-stream states into one batch (in the given order). States are
        immutable (steps return new tensors), so a lone stream's is used as it is: a server's
        batch of one skips a copy of every state tensor (~75 us a step hot)."""
        if len(states) == 1:
            return states[0]
        return StreamState(
            tuple(torch.cat(ts, 0) for ts in zip(*(s.tensors for s in states), strict=True))
        )

    def split(self) -> list[StreamState]:
        """One single-stream state per batch item."""
        if self.batch == 1:
            return [self]
        return [StreamState(tuple(t[i : i + 1] for t in self.tensors)) for i in range(self.batch)]

    def to(self, device: torch.device | str) -> StreamState:
        return StreamState(tuple(t.to(device) for t in self.tensors))


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class StreamingEngine:
    """Chunked, batched encode/decode over an inference copy of a model."""

    def __init__(
        self,
        model: MCRave,
        device: str | torch.device | None = None,
        runtime: str = DEFAULT_RUNTIME,
    ) -> None:
        retain_freed_memory()  # steps reuse their intermediates' pages (mcrave.memory)
        self.device = pick_device(device)
        self.model = inference_copy(model).to(self.device)
        self.runtime = runtime
        self._encode, self._decode = step_modules(self.model.encoder, self.model.decoder, runtime)
        cfg = model.cfg
        self.cfg = cfg
        self.channels = cfg.channels
        self.ratio = cfg.ratio
        self.latent_size = cfg.latent_size
        self.sample_rate = cfg.sample_rate
        self.latency = model.latency
        self.max_chunk = MAX_CHUNK_FRAMES * cfg.ratio
        # latent frames of silence that end a stream so every input sample reaches the output
        self.flush_frames = max(1, -(-self.latency // cfg.ratio))

    @property
    def offline_chunk(self) -> int:
        """Samples per step for offline inference: the largest chunk, shortened at large N so a
        step's memory stays bounded (N=299: 1 latent frame)."""
        frames = max(1, min(MAX_CHUNK_FRAMES, OFFLINE_CHANNEL_FRAMES // self.channels))
        return frames * self.ratio

    def new_encoder_state(self, batch: int = 1) -> StreamState:
        return StreamState(tuple(self.model.initial_states("encoder", batch, self.device)))

    def new_decoder_state(self, batch: int = 1, seeds: Sequence[int] | None = None) -> StreamState:
        if seeds is not None and len(seeds) != batch:
            raise ValueError(f"got {len(seeds)} seeds for {batch} streams")
        start = None if seeds is None else torch.as_tensor(list(seeds), dtype=torch.int64)
        return StreamState(tuple(self.model.initial_states("decoder", batch, self.device, start)))

    def check_chunk(self, frames: int) -> None:
        """Raise ValueError unless `frames` audio samples form an allowed chunk."""
        if frames <= 0 or frames % self.ratio or frames > self.max_chunk:
            raise ValueError(
                f"chunk of {frames} samples: must be a positive multiple of {self.ratio} "
                f"and at most {self.max_chunk}"
            )

    @torch.no_grad()
    def encode_step(
        self, state: StreamState, audio: Tensor, mask: Tensor
    ) -> tuple[StreamState, Tensor]:
        """audio [B, N, C] (absent channels ignored), mask [B, N] -> new state, latent means [B, D, C/ratio]."""
        b, n, c = audio.shape
        if n != self.channels or mask.shape != (b, n) or state.batch != b:
            raise ValueError(
                f"expected audio [B, {self.channels}, C], mask [B, {self.channels}] and {b} states"
            )
        self.check_chunk(c)
        mean, states = self._encode(
            audio.to(self.device, torch.float32), mask.to(self.device), list(state.tensors)
        )
        return StreamState(tuple(states)), mean

    @torch.no_grad()
    def decode_step(
        self,
        state: StreamState,
        z: Tensor,
        audio: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> tuple[StreamState, Tensor]:
        """z [B, D, F] (+ the present channels' audio [B, N, F*ratio] and mask [B, N], for the
        spatial stage) -> new state, all channels [B, N, F*ratio]."""
        b, d, f = z.shape
        if d != self.latent_size or state.batch != b:
            raise ValueError(f"expected latents [B, {self.latent_size}, F] and {b} states")
        self.check_chunk(f * self.ratio)
        if (audio is None) != (mask is None):
            raise ValueError("the present audio and its mask go together")
        if audio is not None and mask is not None:
            if audio.shape != (b, self.channels, f * self.ratio) or mask.shape != (
                b,
                self.channels,
            ):
                raise ValueError(
                    f"expected present audio [{b}, {self.channels}, {f * self.ratio}] "
                    f"and mask [{b}, {self.channels}]"
                )
            audio, mask = audio.to(self.device, torch.float32), mask.to(self.device)
        out, states = self._decode(
            z.to(self.device, torch.float32), list(state.tensors), audio, mask
        )
        return StreamState(tuple(states)), out


def inference_copy(model: MCRave) -> MCRave:
    """A frozen copy for inference: weight norm folded, projection matrix fixed, eval mode."""
    # rebuilt, not deep-copied: parametrised modules share generated classes with their copies,
    # so folding weight norm in a deepcopy would break the original
    twin = MCRave(model.cfg)
    twin.load_state_dict(model.state_dict())
    remove_weight_norm(twin)
    twin.decoder.projection = twin.projection = model.projection.frozen()
    twin.eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin
