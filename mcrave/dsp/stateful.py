"""The streaming-state convention shared by every causal layer.

Each stateful layer owns one slot (`sid`) in a list of per-stream state tensors ([B, C, K]) that
the caller passes in; the layer reads its slot and writes the updated context back. Offline
processing is streaming with zero-initialised states and one chunk, so both paths run the same
code, and a server can gather/scatter states of many streams between steps.
"""

import torch
from torch import nn


class StatefulLayer(nn.Module):
    """Base for layers that keep per-stream context; `assign_state_slots` numbers them."""

    sid: int
    state_dtype = torch.float32

    def __init__(self) -> None:
        super().__init__()
        self.sid = -1

    def state_shape(self) -> tuple[int, int]:
        """Per-stream state shape (channels, samples)."""
        raise NotImplementedError


def assign_state_slots(model: nn.Module) -> list[tuple[tuple[int, int], torch.dtype]]:
    """Number every stateful layer in module order; returns their (per-stream shape, dtype)."""
    slots: list[tuple[tuple[int, int], torch.dtype]] = []
    for module in model.modules():
        if isinstance(module, StatefulLayer):
            module.sid = len(slots)
            slots.append((module.state_shape(), module.state_dtype))
    return slots


class ContextBuffer(StatefulLayer):
    """Prepends the last `length` samples of the previous call: [B, rows, T] -> [B, rows, L + T]."""

    def __init__(self, rows: int, length: int) -> None:
        super().__init__()
        self.rows = rows
        self.length = length

    def state_shape(self) -> tuple[int, int]:
        return (self.rows, self.length)

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        full = torch.cat([states[self.sid], x], -1)
        states[self.sid] = full[..., full.shape[-1] - self.length :]
        return full
