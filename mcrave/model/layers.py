"""Causal convolution layers with explicit streaming state.

State convention: see `mcrave.dsp.stateful`.
Shapes: [B, C, T]. Chunks must be multiples of the strides below a layer (the model's ratio).
"""

from __future__ import annotations

from typing import Optional  # TorchScript reads Optional, not `X | None`

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from mcrave.config import WEIGHT_PRECISIONS
from mcrave.dsp.stateful import StatefulLayer

LEAKY_SLOPE = 0.2
LEAKY_GAIN = (2.0 / (1.0 + LEAKY_SLOPE**2)) ** 0.5


def variance_preserving(conv: nn.Module, fan_in: int, gain: float = LEAKY_GAIN) -> nn.Module:
    """He-normal weights for `fan_in` inputs per output sample, zero bias (returns `conv`).

    PyTorch's default conv init shrinks the signal ~3x per layer and draws biases as large as
    the weights, so an untrained encoder's latents barely move with the input and the untrained
    decoder's output barely moves with z: short runs then learn to ignore the latent.
    """
    with torch.no_grad():
        conv.weight.normal_(0.0, gain / fan_in**0.5)
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


# the int8-weight kernel reads a quarter of float32's bytes but is a GEMV at heart: measured on
# this CPU ([M, 2304] x [768, 2304]^T, weights beyond the caches) it beats the bf16 GEMM up to
# ~8 rows (1 row: 91 vs 202 us, 2: 105 vs 185) and loses from 16 (466 vs 295 us)
INT8_MAX_ROWS = 8
INT8_INNER_MULTIPLE = 16  # see `quantize_conv_weights`
# inputs x taps from which an undilated conv runs as oneDNN's conv1d (see `conv1d_gemm`); the
# widest conv of v2 or of cpu-small below N=64 has 768 x 3 = 2304
ONEDNN_MIN_COLUMNS = 4096


def weight_product(
    rows: Tensor,
    weight: Tensor,
    int8: Optional[Tensor],  # noqa: UP045
    scale: Optional[Tensor],  # noqa: UP045
    int8_max_rows: int = INT8_MAX_ROWS,  # a default, not a global: TorchScript reads no globals
) -> Tensor:
    """rows [M, K] x weight [O, K]^T -> [M, O] in the rows' dtype, computed in the weight's
    precision.

    Reduced-precision runtimes (`cast_conv_weights`, `quantize_conv_weights`) store the weight in
    bfloat16 and may add an int8 copy with one scale per output row; both multiply bfloat16
    activations, since the int8 kernel with float32 activations runs 8x slower here.
    """
    if int8 is not None and scale is not None and rows.shape[0] <= int8_max_rows:
        return torch._weight_int8pack_mm(rows.to(scale.dtype).contiguous(), int8, scale).to(
            rows.dtype
        )
    if weight.dtype != rows.dtype:
        return F.linear(rows.to(weight.dtype), weight).to(rows.dtype)
    return F.linear(rows, weight)


def conv1d_gemm(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],  # noqa: UP045
    stride: int,
    dilation: int,
    int8: Optional[Tensor] = None,  # noqa: UP045
    scale: Optional[Tensor] = None,  # noqa: UP045
    onednn_min_columns: int = ONEDNN_MIN_COLUMNS,  # a default: TorchScript reads no globals
) -> Tensor:
    """Valid conv1d as one matrix product over unfolded columns.

    For streaming-sized inputs PyTorch's CPU convolution falls back to slow per-element kernels
    (notably for dilated convs); im2col + GEMM runs the same arithmetic through BLAS instead.
    The product is [B*T, C*k] x [O, C*k]^T (`linear`), time in the rows: with a few time steps
    and a large weight that orientation runs ~4x faster than weight x columns (measured on this
    CPU, 768x2304 by 2 steps: 0.27 vs 1.1 ms): streaming reads every weight once per step.
    Training (weights that need gradients: long crops, where the unfolded columns' backward is a
    slow scatter) takes oneDNN's conv1d instead: v2 phase-1 step 777 -> 677 ms at N=1; so do
    very wide undilated convs (`ONEDNN_MIN_COLUMNS`), whose unfolded columns cost more to copy
    than the product: the encoder's input at N=299 (5083 x 7 columns, 128 steps) 4.1 -> 2.0 ms.
    """
    k = weight.shape[-1]
    reduced = weight.dtype != x.dtype  # bf16 weights, with or without an int8 copy
    wide = dilation == 1 and weight.shape[1] * k >= onednn_min_columns
    if weight.requires_grad or (wide and not reduced):
        return F.conv1d(x, weight, bias, stride, 0, dilation)
    # reduced precision: cast before unfolding, so the columns are copied once, at half width
    # (casting the float32 columns after cost a second pass over them)
    source = x.to(weight.dtype) if reduced else x
    if k == 1:
        cols = source[:, :, ::stride].transpose(1, 2)  # [B, T_out, C]
    else:
        cols = source.unfold(2, (k - 1) * dilation + 1, stride)  # [B, C, T_out, span]
        if dilation > 1:
            cols = cols[..., ::dilation]  # [B, C, T_out, k]
        cols = cols.transpose(1, 2).reshape(x.shape[0], cols.shape[2], -1)  # [B, T_out, C*k]
    w = weight.reshape(weight.shape[0], -1)
    if not reduced:
        return F.linear(cols, w, bias).transpose(1, 2)
    b, t, ck = cols.shape
    y = weight_product(cols.reshape(b * t, ck), w, int8, scale).reshape(b, t, -1).to(x.dtype)
    if bias is not None:
        y = y + bias
    return y.transpose(1, 2)


class CausalConv1d(StatefulLayer):
    """Conv1d with no look-ahead: output f sees the inputs up to the *end* of its stride block.

    The left context is span - stride samples (span = (k-1)*dilation + 1), so with stride s
    output f covers inputs [(f+1)*s - span, (f+1)*s). With a context of span - 1 instead, a
    latent frame saw only the first sample of its block and the decoder had to *predict* the
    rest of the frame (~23 ms) from the past. With chunks that are multiples of s, each chunk of
    T samples yields T/s outputs on the same grid as one offline pass.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        dilation: int = 1,
        gain: float = LEAKY_GAIN,
    ) -> None:
        super().__init__()
        conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation)
        self.conv = weight_norm(variance_preserving(conv, cin * kernel, gain))
        span = (kernel - 1) * dilation + 1
        if span < stride:
            raise ValueError(f"kernel span {span} is shorter than stride {stride}")
        self.context = span - stride
        self.cin = cin
        self.stride = stride
        self.dilation = dilation
        self.int8 = self.int8_scale = None  # set by `quantize_conv_weights`

    def state_shape(self) -> tuple[int, int]:
        return (self.cin, self.context)

    def forward(
        self,
        x: Tensor,
        states: list[Tensor],
        inputs: Optional[Tensor] = None,  # noqa: UP045
    ) -> Tensor:
        """x [B, C_in, T] -> [B, C_out, T']. With `inputs` [R], x holds only those input rows
        [B, R, T]: every other input row is zero now and in the context (the caller knows), so
        it is left out of the product (the encoder's input at large N with channels absent)."""
        if inputs is not None:
            return self._forward_inputs(x, states, inputs)
        if self.context > 0:
            x = torch.cat([states[self.sid], x], -1)
            states[self.sid] = x[..., x.shape[-1] - self.context :]
        return conv1d_gemm(
            x,
            self.conv.weight,
            self.conv.bias,
            self.stride,
            self.dilation,
            self.int8,
            self.int8_scale,
        )

    def _forward_inputs(self, x: Tensor, states: list[Tensor], inputs: Tensor) -> Tensor:
        weight = self.conv.weight.index_select(1, inputs)
        if self.context > 0:
            context = states[self.sid]
            x = torch.cat([context.index_select(1, inputs), x], -1)
            tail = x[..., x.shape[-1] - self.context :]
            states[self.sid] = torch.zeros_like(context).index_copy(1, inputs, tail)
        # no int8 copy: its kernel needs an inner size that is a multiple of 16
        return conv1d_gemm(x, weight, self.conv.bias, self.stride, self.dilation)


class CausalConvTranspose1d(StatefulLayer):
    """Upsampling by `stride` with kernel 2*stride; the overlap-add tail is carried as state."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        conv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride, bias=False)
        self.conv = weight_norm(variance_preserving(conv, cin * 2))  # 2 taps reach each output
        self.bias = nn.Parameter(torch.zeros(cout))
        self.stride = stride
        self.cout = cout
        self.int8 = self.int8_scale = None  # set by `quantize_conv_weights`

    def state_shape(self) -> tuple[int, int]:
        return (self.cout, self.stride)

    def forward(self, x: Tensor, states: list[Tensor]) -> Tensor:
        # as a GEMM: frame f writes kernel taps [0, s) at f*s and taps [s, 2s) at (f+1)*s
        # (time in the rows of the product, as in conv1d_gemm; the weight [C_in, C_out, 2s] is
        # read as [C_in, C_out*2s] without a copy)
        s = self.stride
        b, c, f = x.shape
        # one [B*F, C_in] GEMM: matmul on the 3-D transposed view would broadcast the weight to
        # a batched product, reading it B times
        rows = x.transpose(1, 2).reshape(b * f, c)
        weight = self.conv.weight.reshape(c, -1).t()  # [C_out*2s, C_in], a view
        y = weight_product(rows, weight, self.int8, self.int8_scale)  # [B*F, C_out*2s]
        y = y.reshape(b, f, self.cout, 2 * s).transpose(1, 2)  # [B, C_out, F, 2s]
        frames = F.pad(y[..., :s], (0, 0, 0, 1)) + F.pad(y[..., s:], (0, 0, 1, 0))  # [B, C, F+1, s]
        full = frames.reshape(b, self.cout, -1)  # [B, C_out, (F+1)*s]
        n = x.shape[-1] * self.stride
        head = full[..., :n]
        head = torch.cat(
            [head[..., : self.stride] + states[self.sid], head[..., self.stride :]], -1
        )
        states[self.sid] = full[..., n:]
        return head + self.bias[:, None]


RESIDUAL_GAIN = 0.3


class ResidualUnit(nn.Module):
    """x + 1x1(act(dilated causal conv(act(x)))): causal, so the skip needs no delay."""

    def __init__(self, width: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = CausalConv1d(width, width, kernel, dilation=dilation)
        # a small residual branch: each unit starts near the identity, so depth keeps the scale
        self.mix = weight_norm(
            variance_preserving(nn.Conv1d(width, width, 1), width, RESIDUAL_GAIN)
        )
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.int8 = self.int8_scale = None  # set by `quantize_conv_weights`

    def forward(self, x: Tensor, states: list[Tensor]) -> Tensor:
        y = self.conv(self.act(x), states)
        mix = conv1d_gemm(
            self.act(y), self.mix.weight, self.mix.bias, 1, 1, self.int8, self.int8_scale
        )
        return x + mix


def remove_weight_norm(model: nn.Module) -> nn.Module:
    """Fold weight-norm parametrisations into plain weights (faster, and scriptable)."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def _gemm_weights(model: nn.Module) -> list[tuple[nn.Module, nn.Module, bool]]:
    """(layer, the nn.Conv* holding its weight, transposed?) for every conv the GEMMs run: the
    encoder's and decoder's, not the PQMF or the spatial stage (small, and precision-critical)."""
    found = []
    for module in model.modules():
        if isinstance(module, CausalConv1d):
            found.append((module, module.conv, False))
        elif isinstance(module, CausalConvTranspose1d):
            found.append((module, module.conv, True))
        elif isinstance(module, ResidualUnit):
            found.append((module, module.mix, False))
    return found


def cast_conv_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store the conv weights (not biases) of an inference copy in `dtype`; activations stay
    float32 and each GEMM runs in `dtype`. bfloat16 halves the bytes a streaming step reads,
    which is what bounds one large stream (see bench/README.md)."""
    for _, conv, _ in _gemm_weights(model):
        conv.weight = nn.Parameter(conv.weight.detach().to(dtype), False)
    return model


def quantize_conv_weights(model: nn.Module) -> nn.Module:
    """bfloat16 conv weights plus an int8 copy (symmetric, one scale per output row) that the
    GEMMs with few rows read (`INT8_MAX_ROWS`): one stream's step reads ~1/4 of float32's bytes.
    CPU only: the int8-weight kernel has no CUDA version. It also needs an inner size that is a
    multiple of 16 (torch 2.13's CPU kernel returns garbage or crashes otherwise, measured), so
    layers with other sizes keep only their bfloat16 weights."""
    for layer, conv, transposed in _gemm_weights(model):
        weight = conv.weight.detach()
        rows = weight.reshape(weight.shape[0], -1)
        rows = rows.t() if transposed else rows  # [outputs, inputs], as `weight_product` reads
        if rows.shape[1] % INT8_INNER_MULTIPLE:
            continue
        scale = rows.abs().amax(1).clamp_min(1e-12) / 127.0
        layer.int8 = torch.round(rows / scale[:, None]).to(torch.int8).contiguous()
        layer.int8_scale = scale.to(torch.bfloat16)
    return cast_conv_weights(model, torch.bfloat16)


def set_weight_precision(model: nn.Module, precision: str) -> nn.Module:
    """An inference copy's conv weights in `precision` (WEIGHT_PRECISIONS): float32 leaves them."""
    if precision not in WEIGHT_PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(WEIGHT_PRECISIONS)}")
    if precision == "bf16":
        cast_conv_weights(model, torch.bfloat16)
    elif precision == "int8":
        if any(p.device.type != "cpu" for p in model.parameters()):
            raise ValueError(
                "int8 weights run on CPU only (the int8-weight kernel has no CUDA version)"
            )
        quantize_conv_weights(model)
    return model
