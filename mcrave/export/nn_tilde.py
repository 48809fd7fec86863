"""Scripted nn~ model: `encode` (N -> D), `decode` (D -> N) and `forward` (N -> N), streaming.

`forward` feeds the present input channels through the spatial stage (present channels pass
through, missing ones are built from them, steered by the latents); `decode` has no audio, so it
takes the latent-only path. nn~ calls a method once per audio buffer with a [B, C, T] tensor and
expects it to continue the stream, so the caches live inside the scripted module (one set per method, re-created when the
batch size changes, e.g. for mc.nn~). The `present` attribute holds N int flags (1 = channel fed)
and is settable from Max with `set present 0 1 ...`; nn~ passes one positional int per flag, so
the setter's arity is generated for N (see `_present_setter`). `encode` outputs and `decode` takes
latents rotated onto their principal axes (mcrave/export/latent_pca.py), most variance first.
"""

import importlib.util
import sys
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from mcrave.export.latent_pca import LatentPCA
from mcrave.model import MCRave
from mcrave.model.layers import set_weight_precision
from mcrave.runtime import SCRIPTING_LOCK
from mcrave.streaming import inference_copy


class NNTildeModel(nn.Module):
    """The module nn~ loads; build through `script_nn_tilde`."""

    encode_input_labels: list[str]
    encode_output_labels: list[str]
    decode_input_labels: list[str]
    decode_output_labels: list[str]
    forward_input_labels: list[str]
    forward_output_labels: list[str]
    present: list[int]
    ranked: bool
    enc_shapes: list[list[int]]
    dec_shapes: list[list[int]]
    dec_integer: list[bool]
    enc_states: list[Tensor]
    dec_states: list[Tensor]
    fwd_enc_states: list[Tensor]
    fwd_dec_states: list[Tensor]

    def __init__(
        self, model: MCRave, pca: LatentPCA | None = None, precision: str = "float32"
    ) -> None:
        super().__init__()
        twin = set_weight_precision(inference_copy(model), precision)
        cfg = model.cfg
        n, d, r = cfg.channels, cfg.latent_size, cfg.ratio
        self.encoder = twin.encoder
        self.decoder = twin.decoder
        self.channels = n
        self.sample_rate = cfg.sample_rate
        self.register_buffer("encode_params", torch.tensor([n, 1, d, r]))
        self.register_buffer("decode_params", torch.tensor([d, r, n, 1]))
        self.register_buffer("forward_params", torch.tensor([n, 1, n, 1]))
        self.register_buffer("present_params", torch.ones(n, dtype=torch.long))  # n ints
        names = list(cfg.names)
        self.ranked = pca is not None  # without a ranking, no rotation per buffer at all
        pca = pca if pca is not None else LatentPCA.identity(d)
        if pca.components.shape != (d, d):
            raise ValueError(f"latent PCA is {tuple(pca.components.shape)}, the model has D={d}")
        self.register_buffer("latent_mean", pca.mean.clone()[:, None])
        self.register_buffer("latent_components", pca.components.clone())
        latents = [f"latent {i} ({100 * float(v):.1f} % var)" for i, v in enumerate(pca.explained)]
        self.encode_input_labels = names
        self.encode_output_labels = latents
        self.decode_input_labels = latents
        self.decode_output_labels = names
        self.forward_input_labels = names
        self.forward_output_labels = names
        self.present = [1] * n
        self.enc_shapes = [list(s) for s, _ in twin.encoder_slots]
        self.dec_shapes = [list(s) for s, _ in twin.decoder_slots]
        self.dec_integer = [dt == torch.int64 for _, dt in twin.decoder_slots]
        self.enc_states = []
        self.dec_states = []
        self.fwd_enc_states = []
        self.fwd_dec_states = []

    def _zeros(
        self, shapes: list[list[int]], integer: list[bool], batch: int, like: Tensor
    ) -> list[Tensor]:
        out: list[Tensor] = []
        for i in range(len(shapes)):
            dtype = torch.int64 if integer[i] else torch.float32
            out.append(torch.zeros([batch] + shapes[i], dtype=dtype, device=like.device))
        return out

    def _fresh(
        self, states: list[Tensor], shapes: list[list[int]], integer: list[bool], x: Tensor
    ) -> list[Tensor]:
        """The current caches, or new ones when the batch size or device changed."""
        if len(states) == 0 or states[0].shape[0] != x.shape[0] or states[0].device != x.device:
            return self._zeros(shapes, integer, x.shape[0], x)
        return states

    def _mask(self, x: Tensor) -> Tensor:
        flags = torch.tensor(self.present, dtype=torch.bool, device=x.device)
        return flags[None, :].expand(x.shape[0], self.channels)

    def _encode(self, x: Tensor, states: list[Tensor]) -> Tensor:
        mean, scale = self.encoder(x, self._mask(x), states)
        if self.ranked:
            return self.latent_components @ (mean - self.latent_mean)
        return mean

    @torch.jit.export
    def encode(self, x: Tensor) -> Tensor:
        states = self._fresh(self.enc_states, self.enc_shapes, [False] * len(self.enc_shapes), x)
        z = self._encode(x, states)
        self.enc_states = states
        return z

    @torch.jit.export
    def decode(self, z: Tensor) -> Tensor:
        states = self._fresh(self.dec_states, self.dec_shapes, self.dec_integer, z)
        if self.ranked:
            z = self.latent_components.t() @ z + self.latent_mean
        y = self.decoder(z, states)
        self.dec_states = states
        return y

    def forward(self, x: Tensor) -> Tensor:
        enc = self._fresh(self.fwd_enc_states, self.enc_shapes, [False] * len(self.enc_shapes), x)
        dec = self._fresh(self.fwd_dec_states, self.dec_shapes, self.dec_integer, x)
        mask = self._mask(x)
        mean, scale = self.encoder(x, mask, enc)
        y = self.decoder(mean, dec, x, mask)
        self.fwd_enc_states = enc
        self.fwd_dec_states = dec
        return y

    @torch.jit.export
    def get_methods(self) -> list[str]:
        return ["encode", "decode", "forward"]

    @torch.jit.export
    def get_attributes(self) -> list[str]:
        return ["present"]

    @torch.jit.export
    def get_present(self) -> list[int]:
        return self.present

    @torch.jit.export
    def set_present_list(self, flags: list[int]) -> int:
        """Apply N flags; refuses (returns 1) a wrong count or an empty set."""
        if len(flags) != self.channels or sum([1 if f != 0 else 0 for f in flags]) == 0:
            return 1
        self.present = [1 if f != 0 else 0 for f in flags]
        return 0

    @torch.jit.export
    def reset(self) -> int:
        """Forget all stream history (the next buffer starts a new stream)."""
        self.enc_states = []
        self.dec_states = []
        self.fwd_enc_states = []
        self.fwd_dec_states = []
        return 0

    @torch.jit.export
    def set_sample_rate(self, sample_rate: int) -> int:
        """nn~ reports the host rate; the model does not resample (its rate is in `sample_rate`)."""
        return 0 if sample_rate == self.sample_rate else 1


def _present_setter(channels: int):
    """Generate `set_present(self, c0: int, ..., cN-1: int) -> int` in a real source file.

    TorchScript compiles from source text, so the function must live in an importable file.
    """
    args = ", ".join(f"c{i}: int" for i in range(channels))
    values = ", ".join(f"c{i}" for i in range(channels))
    source = (
        f"def set_present(self, {args}) -> int:\n    return self.set_present_list([{values}])\n"
    )
    folder = Path(tempfile.mkdtemp(prefix="mcrave_setter_"))
    path = folder / f"mcrave_present_setter_{channels}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return torch.jit.export(module.set_present)


def script_nn_tilde(
    model: MCRave, pca: LatentPCA | None = None, precision: str = "float32"
) -> torch.jit.ScriptModule:
    """The scripted nn~ module for `model`, latents ranked by `pca` (None: the model's own), conv
    weights in `precision` (bf16/int8: faster for large models, not float32-equal; int8 is CPU
    only, as the engine's `torchscript-int8` runtime)."""
    cls = type(
        f"NNTildeModel{model.cfg.channels}",
        (NNTildeModel,),
        {"set_present": _present_setter(model.cfg.channels), "__module__": NNTildeModel.__module__},
    )
    with SCRIPTING_LOCK:  # one TorchScript compilation at a time (see mcrave/runtime.py)
        scripted = torch.jit.script(cls(model, pca, precision).eval())
    scripted.reset()
    return scripted


def export_nn_tilde(
    model: MCRave,
    path: "str | Path",
    *,
    pca: LatentPCA | None = None,
    precision: str = "float32",
    force: bool = False,
) -> Path:
    """Script and save atomically to `path`."""
    from mcrave.atomic import atomic_write

    scripted = script_nn_tilde(model, pca, precision)
    return atomic_write(path, lambda f: torch.jit.save(scripted, f), force=force)
