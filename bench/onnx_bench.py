"""ONNX Runtime as a streaming runtime, side by side with the engine's (issue 13 item 1).

For each model the engine's encoder step and decoder step (`mcrave.runtime`, over the inference
copy: weight norm folded) are exported to ONNX with the stream state as explicit graph inputs
`state_i` and outputs `new_state_i` and a dynamic batch, run with onnxruntime (CPU provider),
checked against the StreamingEngine over consecutive chunks from a fresh state, and timed beside
the engine's "torchscript" and "eager" runtimes: encode + decode per buffer, x realtime, for one
stream and for batched streams (aggregate audio seconds), latent-only and through the spatial
stage (present audio + mask). Two ORT graphs: "gemm", the step as the engine runs it (convs as
unfold + GEMM, which export as Gather + MatMul), and "conv", the model's F.conv1d branch of the
same convs (ORT's own Conv kernels; the engine takes it only for training).

Exporter: `torch.onnx.export(dynamo=True)` on a `torch.export` program. The legacy TorchScript
exporter fails on `unfold` with a dynamic batch and has no complex support. The dynamo exporter's
op library lacks complex versions of mul, index_select, where, ... which the spatial stage uses
(its STFT runs on the latent-only path too), so complex ops are first decomposed into real
[..., 2] pairs (`COMPLEX_AS_REAL`), the representation the exporter uses for complex tensors.
The onnxscript graph optimizer is off: with it the spatial graph returned NaN here.

    python bench/onnx_bench.py                  # v2:1 and cpu-small:2, batches 1 and 16
    python bench/onnx_bench.py --quick          # smoke run (cpu-small:2 conv latent-only, b 1,2)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from model_bench import markdown, median_time
from torch import Tensor, nn

from mcrave.config import preset
from mcrave.model import MCRave
from mcrave.runtime import DecoderStep, EncoderStep
from mcrave.streaming import StreamingEngine, inference_copy

aten = torch.ops.aten
CHECK_CHUNKS = 4
CHECK_BATCH = 2
FAIL_DIFF = 1e-3
EXPORTER = "torch.onnx.export(dynamo=True), complex ops decomposed to real pairs, optimize=False"


# ---- complex ops as real [..., 2] pairs (a decomposition table for run_decompositions) -------
def _pair(x: Tensor) -> Tensor:
    """The [..., 2] real view of a complex tensor (a real tensor gets a zero imaginary part)."""
    return torch.view_as_real(x) if x.is_complex() else torch.stack([x, torch.zeros_like(x)], -1)


def _complex(x: Tensor) -> Tensor:
    return torch.view_as_complex(x.contiguous())


def _dim(dim: int) -> int:
    """A dim of the complex tensor as a dim of its pair view (negative dims shift by one)."""
    return dim if dim >= 0 else dim - 1


def _is_complex(*xs) -> bool:
    return any(isinstance(x, Tensor) and x.is_complex() for x in xs)


def _mul(a, b):
    if not _is_complex(a, b):
        return NotImplemented  # the op itself, not decomposed
    if _is_complex(a) and _is_complex(b):
        ar, br = _pair(a), _pair(b)
        re = ar[..., 0] * br[..., 0] - ar[..., 1] * br[..., 1]
        im = ar[..., 0] * br[..., 1] + ar[..., 1] * br[..., 0]
        return _complex(torch.stack([re, im], -1))
    c, r = (a, b) if _is_complex(a) else (b, a)
    return _complex(_pair(c) * (r.unsqueeze(-1) if isinstance(r, Tensor) else r))


def _add(a, b, *, alpha=1):
    if not (_is_complex(a, b) and isinstance(a, Tensor) and isinstance(b, Tensor)):
        return NotImplemented
    if _is_complex(a) and _is_complex(b):
        return NotImplemented  # the exporter's own complex add
    return _complex(_pair(a) + alpha * _pair(b))


def _addcmul(x, a, b, *, value=1):
    if not _is_complex(x, a, b):
        return NotImplemented
    product = _mul(a, b) if _is_complex(a, b) else a * b
    return _complex(_pair(x) + value * _pair(product))


def _index_select(x, dim, index):
    if not _is_complex(x):
        return NotImplemented
    return _complex(torch.index_select(_pair(x), _dim(dim), index))


def _select(x, dim, i):
    if not _is_complex(x):
        return NotImplemented
    return _complex(torch.select(_pair(x), _dim(dim), i))


def _gather(x, dim, index, *, sparse_grad=False):
    if not _is_complex(x):
        return NotImplemented
    pairs = index.unsqueeze(-1).expand(*index.shape, 2)
    return _complex(torch.gather(_pair(x), _dim(dim), pairs))


def _where(cond, a, b):
    if not _is_complex(a, b):
        return NotImplemented
    return _complex(torch.where(cond.unsqueeze(-1), _pair(a), _pair(b)))


def _index_copy(x, dim, index, src):
    if not _is_complex(x):
        return NotImplemented
    return _complex(torch.index_copy(_pair(x), _dim(dim), index, _pair(src)))


def _index_put(x, indices, values, accumulate=False):
    if not _is_complex(x):
        return NotImplemented
    return _complex(aten.index_put.default(_pair(x), indices, _pair(values), accumulate))


def _full(size, value, *, dtype=None, layout=None, device=None, pin_memory=None):
    if dtype is None or not dtype.is_complex:
        return NotImplemented
    v, real = complex(value), dtype.to_real()
    parts = [torch.full(list(size), p, dtype=real, device=device) for p in (v.real, v.imag)]
    return _complex(torch.stack(parts, -1))


def _full_like(x, value, *, dtype=None, layout=None, device=None, pin_memory=None, **_):
    if not (dtype or x.dtype).is_complex:
        return NotImplemented
    return _full(x.shape, value, dtype=dtype or x.dtype, device=x.device)


COMPLEX_AS_REAL: dict = {
    aten.mul.Tensor: _mul,
    aten.add.Tensor: _add,
    aten.addcmul.default: _addcmul,
    aten.index_select.default: _index_select,
    aten.select.int: _select,
    aten.gather.default: _gather,
    aten.where.self: _where,
    aten.index_copy.default: _index_copy,
    aten.index_put.default: _index_put,
    aten.polar.default: lambda r, a: _complex(torch.stack([r * a.cos(), r * a.sin()], -1)),
    aten.complex.default: lambda re, im: _complex(torch.stack([re, im], -1)),
    aten.full.default: _full,
    aten.full_like.default: _full_like,
    aten.zeros.default: lambda size, **kw: _full(size, 0, **kw),
    aten.zeros_like.default: lambda x, **kw: _full_like(x, 0, **kw),
}


# ---- export --------------------------------------------------------------------------------
def _new_states(new: list[Tensor], old: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """New states, pass-through ones cloned: an output that IS an input made the exporter give
    the input the output's name (a graph input called new_state_0)."""
    return tuple(n.clone() if n is o else n for n, o in zip(new, old, strict=True))


class EncoderGraph(nn.Module):
    """EncoderStep with the state list as a tuple of graph inputs and outputs."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.step = EncoderStep(encoder)

    def forward(self, audio: Tensor, mask: Tensor, states: tuple[Tensor, ...]):
        mean, new = self.step(audio, mask, list(states))
        return (mean, *_new_states(new, states))


class DecoderGraph(nn.Module):
    """DecoderStep with the state list as a tuple; audio and mask None: the latent-only path."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.step = DecoderStep(decoder)

    def forward(self, z: Tensor, audio: Tensor | None, mask: Tensor | None, states: tuple):
        out, new = self.step(z, list(states), audio, mask)
        return (out, *_new_states(new, states))


def export(module: nn.Module, args: tuple, names: list[str], out: str, path: Path) -> str:
    """torch.export with a dynamic batch -> complex ops as real pairs -> ONNX at `path`; returns
    how the program was captured."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple(None if a is None else {0: batch} for a in args[:-1])
    dynamic += (tuple({0: batch} for _ in args[-1]),)
    try:
        program = torch.export.export(module, args, dynamic_shapes=dynamic)
        how = "torch.export"
    except Exception as e:  # v2 at N=1: a guard on the data-dependent count of built channels
        # draft_export resolves such guards with the example's real values; the ONNX graph is
        # then held to the engine by `check` (including chunks where that count differs)
        program = torch.export.draft_export(module, args, dynamic_shapes=dynamic)
        how = f"draft_export ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    program = program.run_decompositions(COMPLEX_AS_REAL)
    states = [f"state_{i}" for i in range(len(args[-1]))]
    torch.onnx.export(
        program,
        args,
        str(path),
        dynamo=True,
        input_names=names + states,
        output_names=[out] + [f"new_{s}" for s in states],
        optimize=False,
        verbose=False,
    )
    return how


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # not the constant-folding notes on CastLike
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OrtStep:
    """One exported step: named inputs + the state list in, (output, new state list) out."""

    def __init__(self, sess: ort.InferenceSession) -> None:
        self.sess = sess
        self.inputs = {i.name for i in sess.get_inputs()}  # an unused input may be pruned

    def __call__(self, feeds: dict[str, np.ndarray], states: list[np.ndarray]):
        feeds = feeds | {f"state_{i}": s for i, s in enumerate(states)}
        out = self.sess.run(None, {k: v for k, v in feeds.items() if k in self.inputs})
        return out[0], out[1:]


# ---- check and time ------------------------------------------------------------------------
def inputs(engine: StreamingEngine, batch: int, buffer: int, seed: int) -> tuple[Tensor, Tensor]:
    """Audio [B, N, buffer] and a mask: even seeds alternate present and missing channels along
    rows and channels (every channel is built in some row), odd seeds have channel 0 present in
    every row and the rest missing (channel 0 is no target; at N=1 nothing is built)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, engine.channels, buffer, generator=gen) * 0.1
    rows, cols = torch.arange(batch)[:, None], torch.arange(engine.channels)[None, :]
    mask = (rows + cols) % 2 == 0 if seed % 2 == 0 else (cols == 0).expand(batch, -1)
    return x, mask.contiguous()


def check(engine: StreamingEngine, enc: OrtStep, decs: dict[str, OrtStep], buffer: int) -> dict:
    """Max abs difference, ORT vs the engine, over CHECK_CHUNKS chunks from a fresh state."""
    b = CHECK_BATCH
    seeds = list(range(7, 7 + b))
    diff = {"latents": 0.0} | {f"audio_{p}": 0.0 for p in decs}
    e_enc = engine.new_encoder_state(b)
    e_dec = {p: engine.new_decoder_state(b, seeds) for p in decs}
    o_enc = [t.numpy() for t in e_enc.tensors]
    o_dec = {p: [t.numpy() for t in engine.new_decoder_state(b, seeds).tensors] for p in decs}
    for k in range(CHECK_CHUNKS):
        x, mask = inputs(engine, b, buffer, seed=k)
        e_enc, z = engine.encode_step(e_enc, x, mask)
        oz, o_enc = enc({"audio": x.numpy(), "mask": mask.numpy()}, o_enc)
        diff["latents"] = max(diff["latents"], float(np.abs(oz - z.numpy()).max()))
        for path, dec in decs.items():
            present = (x, mask) if path == "spatial" else (None, None)
            e_dec[path], y = engine.decode_step(e_dec[path], z, *present)
            feeds = {"z": z.numpy(), "present": x.numpy(), "mask": mask.numpy()}
            oy, o_dec[path] = dec(feeds, o_dec[path])
            key = f"audio_{path}"
            diff[key] = max(diff[key], float(np.abs(oy - y.numpy()).max()))
    return diff


def engine_step(engine: StreamingEngine, batch: int, buffer: int, spatial: bool) -> Callable:
    x, mask = inputs(engine, batch, buffer, seed=0)
    state = [engine.new_encoder_state(batch), engine.new_decoder_state(batch)]

    def step() -> None:
        state[0], z = engine.encode_step(state[0], x, mask)
        state[1], _ = engine.decode_step(state[1], z, *((x, mask) if spatial else (None, None)))

    return step


def ort_step(
    engine: StreamingEngine, enc: OrtStep, dec: OrtStep, batch: int, buffer: int
) -> Callable:
    x, mask = (t.numpy() for t in inputs(engine, batch, buffer, seed=0))
    state = [
        [t.numpy() for t in engine.new_encoder_state(batch).tensors],
        [t.numpy() for t in engine.new_decoder_state(batch).tensors],
    ]

    def step() -> None:
        z, state[0] = enc({"audio": x, "mask": mask}, state[0])
        _, state[1] = dec({"z": z, "present": x, "mask": mask}, state[1])

    return step


def export_variant(
    model: MCRave, engine: StreamingEngine, variant: str, args: argparse.Namespace, tmp: Path
) -> tuple[dict, dict[str, OrtStep]]:
    """Export the encoder and decoder steps of one variant, open their ORT sessions and check
    them against the engine: (summary, {"encoder"|"latent"|"spatial": step}).

    "gemm" exports the engine's own step (convs as unfold + GEMM: ONNX Gather + MatMul);
    "conv" takes the model's other branch of `conv1d_gemm` (F.conv1d, chosen when the weights
    need gradients) so ORT runs its own Conv kernels: same arithmetic, other kernels."""
    twin = inference_copy(model)
    for p in twin.parameters():
        p.requires_grad_(variant == "conv")
    b, buffer = CHECK_BATCH, args.buffer
    x, mask = inputs(engine, b, buffer, seed=0)
    z = torch.zeros(b, engine.latent_size, buffer // engine.ratio)
    enc_states = engine.new_encoder_state(b).tensors
    dec_states = engine.new_decoder_state(b).tensors
    graphs = {
        "encoder": (EncoderGraph(twin.encoder), (x, mask, enc_states), ["audio", "mask"]),
        "latent": (DecoderGraph(twin.decoder), (z, None, None, dec_states), ["z"]),
        "spatial": (DecoderGraph(twin.decoder), (z, x, mask, dec_states), ["z", "present", "mask"]),
    }
    summary: dict = {"export_s": {}, "session_s": {}, "captured_by": {}, "spatial": "exported"}
    steps: dict[str, OrtStep] = {}
    for part, (module, example, names) in graphs.items():
        if part == "spatial" and args.skip_spatial:
            summary["spatial"] = "skipped (--skip-spatial)"
            continue
        path = tmp / f"{engine.cfg.preset}-{engine.channels}-{variant}-{part}.onnx"
        start = time.perf_counter()
        try:
            with torch.no_grad():
                how = export(
                    module, example, names, "latents" if part == "encoder" else "audio", path
                )
        except Exception as e:  # only the spatial path may fail: recorded, skipped
            if part != "spatial":
                raise
            summary["spatial"] = f"not exported: {type(e).__name__}: {str(e).splitlines()[0]}"
            continue
        summary["export_s"][part] = time.perf_counter() - start
        summary["captured_by"][part] = how
        start = time.perf_counter()
        steps[part] = OrtStep(session(path, args.threads))
        summary["session_s"][part] = time.perf_counter() - start
    decs = {p: s for p, s in steps.items() if p != "encoder"}
    summary["max_abs_diff"] = check(engine, steps["encoder"], decs, buffer)
    print(
        f"{engine.cfg.preset}:{engine.channels} onnxruntime-{variant}: export s "
        f"{_rounded(summary['export_s'])}, ORT session s {_rounded(summary['session_s'])}, "
        f"spatial {summary['spatial']}; max abs diff vs engine {summary['max_abs_diff']}"
        + "".join(
            f"; {p} by {h}" for p, h in summary["captured_by"].items() if h != "torch.export"
        ),
        flush=True,
    )
    return summary, steps


def _rounded(times: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in times.items()}


def bench_model(name: str, channels: int, args: argparse.Namespace, tmp: Path) -> tuple[dict, list]:
    """Export, check and time one model: (its summary per ORT variant, one row per runtime)."""
    torch.manual_seed(0)
    model = MCRave(preset(name, channels=channels).model).eval()
    engines = {rt: StreamingEngine(model, "cpu", runtime=rt) for rt in ("torchscript", "eager")}
    engine = engines["torchscript"]
    summary: dict = {"config": name, "channels": channels, "variants": {}}
    steps = {}
    for variant in args.variant_list:
        summary["variants"][variant], steps[variant] = export_variant(
            model, engine, variant, args, tmp
        )
    paths = ["latent"] + ([] if args.skip_spatial else ["spatial"])
    rows = []
    for runtime in ("torchscript", "eager", *(f"onnxruntime-{v}" for v in args.variant_list)):
        row: dict = {"config": name, "channels": channels, "runtime": runtime}
        for path in paths:
            for batch in args.batch_sizes:
                if runtime.startswith("onnxruntime"):
                    graphs = steps[runtime.removeprefix("onnxruntime-")]
                    fn = None
                    if path in graphs:
                        fn = ort_step(engine, graphs["encoder"], graphs[path], batch, args.buffer)
                else:
                    fn = engine_step(engines[runtime], batch, args.buffer, path == "spatial")
                audio_s = batch * args.buffer / engine.sample_rate
                xrt = None if fn is None else audio_s / median_time(fn, args.seconds)
                row[f"{path}_b{batch}_xrt"] = xrt
        rows.append(row)
    return summary, rows


def main(argv: list[str] | None = None) -> int:
    # the exporters log pages (graph dumps from draft_export, deprecation notices): results only
    logging.getLogger("torch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run: cpu-small:2, batches 1,2")
    p.add_argument("--models", default="v2:1,cpu-small:2", help="comma-separated PRESET:N")
    p.add_argument("--buffer", type=int, default=2048, help="chunk in samples (fixed)")
    p.add_argument("--batches", default="1,16", help="batch sizes timed")
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timing window")
    p.add_argument("--threads", type=int, help="torch and ORT intra-op threads (2; --quick 1)")
    p.add_argument("--skip-spatial", action="store_true", help="latent-only decoder only")
    p.add_argument("--variants", default="gemm,conv", help="ORT graphs: gemm (as the engine), conv")
    p.add_argument("-o", "--out", "--output", dest="out", default="bench/results/onnx_bench.json")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.seconds, args.batches = "cpu-small:2", 0.2, "1,2"
        args.variants, args.skip_spatial = "conv", True  # each graph's export takes 5-20 s
    # 2 threads beside another busy process stall at OpenMP barriers (eager steps of 0.8 s
    # instead of 6 ms, measured on 2 cores): one thread keeps the smoke run short anywhere
    args.threads = args.threads or (1 if args.quick else 2)
    args.batch_sizes = [int(b) for b in args.batches.split(",")]
    args.variant_list = args.variants.split(",")
    torch.set_num_threads(args.threads)
    result: dict = {
        "exporter": EXPORTER,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "buffer": args.buffer,
        "models": [],
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            name, channels = spec.split(":")
            summary, rows = bench_model(name, int(channels), args, Path(tmp))
            result["models"].append(summary)
            result["rows"] += rows
    print(f"\nexporter: {EXPORTER}; x RT, encode + decode per {args.buffer}-sample buffer\n")
    print(markdown(result["rows"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    worst = max(
        d
        for m in result["models"]
        for v in m["variants"].values()
        for d in v["max_abs_diff"].values()
    )
    if worst > FAIL_DIFF:
        print(f"FAIL: ORT differs from the engine by {worst:.3g} > {FAIL_DIFF}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
