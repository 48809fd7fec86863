"""Step runtimes for the streaming engine: one encoder step and one decoder step, run eagerly or
as frozen TorchScript, optionally with bfloat16 conv weights, or bfloat16 plus int8 copies for
the few-row GEMMs of one stream (both opt-in: not float32-equal).

At streaming sizes (2048 samples is ONE latent frame) a step is hundreds of tiny ops, so the
time goes to per-op Python and dispatch overhead, not arithmetic; a frozen TorchScript graph
(weights folded into constants, the whole step one interpreter call) removes the Python part.
Both runtimes take and return the explicit state list, so the engine and its callers see the
same function whichever runs (a Python list passed into TorchScript is copied, so in-place
updates would not come back: the new states are returned, never mutated in the caller's list).
"""

from __future__ import annotations

import threading
from typing import Optional  # TorchScript reads Optional, not `X | None`

import torch
from torch import Tensor, nn

from mcrave.config import FLOAT32_RUNTIMES, RUNTIME_PRECISION, RUNTIMES
from mcrave.model.decoder import Decoder
from mcrave.model.encoder import Encoder
from mcrave.model.layers import set_weight_precision


class EncoderStep(nn.Module):
    """audio [B, N, C], mask [B, N], states -> latent means [B, D, C/ratio], new states."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, audio: Tensor, mask: Tensor, states: list[Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        mean, _ = self.encoder(audio, mask, states)
        return mean, states


class DecoderStep(nn.Module):
    """z [B, D, F], states, present audio [B, N, F*ratio] and mask [B, N] (or None: latent-only)
    -> all channels [B, N, F*ratio], new states."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(
        self,
        z: Tensor,
        states: list[Tensor],
        audio: Optional[Tensor],  # noqa: UP045
        mask: Optional[Tensor],  # noqa: UP045
    ) -> tuple[Tensor, list[Tensor]]:
        return self.decoder(z, states, audio, mask), states


__all__ = [
    "FLOAT32_RUNTIMES",
    "RUNTIMES",
    "SCRIPTING_LOCK",
    "DecoderStep",
    "EncoderStep",
    "step_modules",
]


# TorchScript compiles from Python source through `ast`, which CPython 3.11 does not guard across
# threads ("AST constructor recursion depth mismatch" when an encoder and a decoder server in one
# process loaded a new model version at once): one compilation at a time, process-wide
SCRIPTING_LOCK = threading.Lock()


def step_modules(encoder: Encoder, decoder: Decoder, runtime: str) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder steps of an inference copy (eval mode, weight norm folded)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    set_weight_precision(encoder, RUNTIME_PRECISION[runtime])
    set_weight_precision(decoder, RUNTIME_PRECISION[runtime])
    steps: tuple[nn.Module, nn.Module] = (EncoderStep(encoder), DecoderStep(decoder))
    if runtime == "eager":
        return steps
    with SCRIPTING_LOCK:
        return tuple(torch.jit.freeze(torch.jit.script(step.eval())) for step in steps)  # type: ignore[return-value]
