"""Causal convolution layers with explicit streaming state.

State convention: see `mcrave.dsp.stateful`.
Shapes: [B, C, T]. Chunks must be multiples of the strides below a layer (the model's ratio).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from mcrave.dsp.stateful import StatefulLayer


class CausalConv1d(StatefulLayer):
    """Conv1d with (k-1)*dilation samples of left context and no look-ahead.

    With stride s and chunks that are multiples of s, each chunk of T samples yields T/s outputs
    on the same grid as one offline pass.
    """

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__()
        self.conv = weight_norm(nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation))
        self.context = (kernel - 1) * dilation
        self.cin = cin

    def state_shape(self) -> tuple[int, int]:
        return (self.cin, self.context)

    def forward(self, x: Tensor, states: list[Tensor]) -> Tensor:
        if self.context == 0:
            return self.conv(x)
        x = torch.cat([states[self.sid], x], -1)
        states[self.sid] = x[..., x.shape[-1] - self.context :]
        return self.conv(x)


class CausalConvTranspose1d(StatefulLayer):
    """Upsampling by `stride` with kernel 2*stride; the overlap-add tail is carried as state."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = weight_norm(
            nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride, bias=False)
        )
        self.bias = nn.Parameter(torch.zeros(cout))
        self.stride = stride
        self.cout = cout

    def state_shape(self) -> tuple[int, int]:
        return (self.cout, self.stride)

    def forward(self, x: Tensor, states: list[Tensor]) -> Tensor:
        full = self.conv(x)  # [B, C, (F+1)*s]
        n = x.shape[-1] * self.stride
        head = full[..., :n]
        head = torch.cat(
            [head[..., : self.stride] + states[self.sid], head[..., self.stride :]], -1
        )
        states[self.sid] = full[..., n:]
        return head + self.bias[:, None]


class ResidualUnit(nn.Module):
    """x + 1x1(act(dilated causal conv(act(x)))): causal, so the skip needs no delay."""

    def __init__(self, width: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = CausalConv1d(width, width, kernel, dilation=dilation)
        self.mix = weight_norm(nn.Conv1d(width, width, 1))

    def forward(self, x: Tensor, states: list[Tensor]) -> Tensor:
        y = self.conv(F.leaky_relu(x, 0.2), states)
        return x + self.mix(F.leaky_relu(y, 0.2))


def remove_weight_norm(model: nn.Module) -> nn.Module:
    """Fold weight-norm parametrisations into plain weights (faster, and scriptable)."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
