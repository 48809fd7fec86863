"""Export a model, stream it through libtorch 2.5.1 (stream_ts) and through mcrave; compare.

Usage: python bench/nn_compat/compare.py STREAM_TS_BINARY WORKDIR [MODEL] [--precision P]

With `--precision bf16|int8` the export's conv weights are reduced and the reference is the
engine's matching runtime (`torchscript-bf16` / `torchscript-int8`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from mcrave.checkpoint import load_model
from mcrave.config import WEIGHT_PRECISIONS, preset
from mcrave.export import export_nn_tilde
from mcrave.model import MCRave
from mcrave.streaming import StreamingEngine


def main(binary: str, workdir: str, source: str | None = None, precision: str = "float32") -> int:
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    if source:
        model, _ = load_model(source)
    else:
        torch.manual_seed(0)
        model = MCRave(preset("test", channels=2).model).eval()
    n, r = model.channels, model.ratio
    present = [0] * n
    present[-1] = 1  # feed only the last channel, as a user feeding R alone would
    buffer = max(2048, r)
    frames = 8 * buffer
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((n, frames)) * 0.3).astype(np.float32)
    ts_path = export_nn_tilde(model, work / "model.ts", precision=precision, force=True)
    (work / "in.f32").write_bytes(audio.tobytes())
    cmd = [
        binary,
        str(ts_path),
        str(work / "in.f32"),
        str(n),
        str(frames),
        str(buffer),
        str(work / "out.f32"),
        *map(str, present),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(proc.stdout.strip(), proc.stderr.strip())
    if proc.returncode:
        return proc.returncode
    theirs = {
        "encode+decode": np.fromfile(work / "out.f32", dtype=np.float32).reshape(n, frames),
        "forward": np.fromfile(work / "out.f32.forward", dtype=np.float32).reshape(n, frames),
    }

    runtime = "torchscript" if precision == "float32" else f"torchscript-{precision}"
    engine = StreamingEngine(model, "cpu", runtime=runtime)
    enc = engine.new_encoder_state(1)
    dec, spatial = engine.new_decoder_state(1), engine.new_decoder_state(1)
    mask = torch.tensor([present], dtype=torch.bool)
    ours: dict[str, list[np.ndarray]] = {"encode+decode": [], "forward": []}
    for start in range(0, frames, buffer):
        chunk = torch.from_numpy(audio[None, :, start : start + buffer])
        enc, z = engine.encode_step(enc, chunk, mask)
        dec, y = engine.decode_step(dec, z)  # `decode`: latents only
        spatial, y_spatial = engine.decode_step(spatial, z, chunk, mask)  # `forward`
        ours["encode+decode"].append(y[0].numpy())
        ours["forward"].append(y_spatial[0].numpy())
    worst = 0.0
    for method, parts in ours.items():
        mine = np.concatenate(parts, -1)
        rel = float(np.abs(theirs[method] - mine).max() / max(np.abs(mine).max(), 1e-12))
        worst = max(worst, rel)
        print(
            f"{method}: {n} channels, present {present}, buffer {buffer}, {precision}: max "
            f"relative difference libtorch 2.5.1 vs mcrave ({runtime}) {rel:.2e}"
        )
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("binary")
    p.add_argument("workdir")
    p.add_argument("model", nargs="?")
    p.add_argument("--precision", choices=WEIGHT_PRECISIONS, default="float32")
    a = p.parse_args()
    sys.exit(main(a.binary, a.workdir, a.model, a.precision))
