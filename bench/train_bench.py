"""Training benchmark: step time, samples/s and x realtime per preset, phase 1 and phase 2.

x realtime = audio seconds trained per wall second (batch x crop / rate / step time). Phase 2
alternates generator and discriminator batches (1 D step in `d_every`); its row is the mean over
one such cycle. With `--rave-python` (a side venv with acids-rave), RAVE v2's own training_step
is timed on the same batch and crop (warmed_up off = phase 1, on = phase 2; RAVE needs crops of
at least 32768 frames); without it the RAVE row says "not measured". Times are means.

    python bench/train_bench.py                       # test, cpu-small, v2 (v2 takes minutes on CPU)
    python bench/train_bench.py --quick               # smoke run: test preset, two steps
    python bench/train_bench.py --rave-python /work/ravevenv/bin/python
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mcrave.config import PRESET_NAMES, preset
from mcrave.data.dataset import CropDataset
from mcrave.data.manifest import new_manifest, save_manifest
from mcrave.training.distributed import DistInfo
from mcrave.training.trainer import RunOptions, Trainer

RAVE_SNIPPET = r"""
import json, statistics, sys, time, torch, gin, rave
batch, crop, steps, threads = map(int, sys.argv[1:5])
torch.set_num_threads(threads)
gin.parse_config_files_and_bindings(["configs/v2.gin"], [])
model = rave.RAVE().train()
opts = model.configure_optimizers()
gen, dis = opts[0]["optimizer"], opts[1]["optimizer"]
model.optimizers = lambda: (gen, dis)
model.log = lambda *a, **k: None
model.log_dict = lambda *a, **k: None
x = torch.randn(batch, 1, crop) * 0.1
out = {}
for phase, warm in ((1, False), (2, True)):
    model.warmed_up = warm
    model.training_step(x.clone(), 1)
    times = []
    # phase 2: whole cycles of RAVE's 1 D step in 4, like our phase-2 mean
    for i in range(steps if phase == 1 else max(4, steps // 4 * 4)):
        t = time.perf_counter(); model.training_step(x.clone(), i); times.append(time.perf_counter() - t)
    out[phase] = statistics.fmean(times)
print(json.dumps(out))
"""


def make_dataset(root: Path, channels: int, sample_rate: int, frames: int) -> Path:
    """One train file of quiet noise, enough for a few crops (speed does not depend on content)."""
    (root / "shards").mkdir(parents=True)
    audio = 0.1 * np.random.default_rng(0).standard_normal((frames, channels), dtype=np.float32)
    np.save(root / "shards/0.npy", audio)
    doc = new_manifest(channels, sample_rate, [], seed=0, valid_fraction=0.0)
    doc["files"].append(
        {
            "source": "noise",
            "sha256": "",
            "split": "train",
            "shard": "shards/0.npy",
            "frames": frames,
        }
    )
    save_manifest(root, doc)
    return root


def time_steps(trainer: Trainer, first: int, count: int) -> list[float]:
    times = []
    for step in range(first, first + count):
        start = time.perf_counter()
        trainer.train_step(step)
        times.append(time.perf_counter() - start)
    return times


def bench_preset(
    name: str,
    channels: int,
    steps: int,
    batch: int | None,
    crop: int | None,
    device: torch.device,
    workdir: Path,
) -> dict:
    cfg = preset(name, channels=channels)
    train = dataclasses.replace(
        cfg.train,
        batch_size=batch or cfg.train.batch_size,
        crop_frames=crop or cfg.train.crop_frames,
    )
    cfg = dataclasses.replace(cfg, train=train)
    root = make_dataset(workdir / name, channels, cfg.model.sample_rate, 4 * train.crop_frames)
    crops = CropDataset(root, "train", train.crop_frames, seed=0, augment=True)
    trainer = Trainer(
        cfg, crops, None, RunOptions(workdir / f"{name}-run", train.max_steps), DistInfo(), device
    )
    time_steps(trainer, 0, 1)  # warm-up
    phase1 = statistics.fmean(time_steps(trainer, 1, steps))
    p2 = train.phase1_steps
    time_steps(trainer, p2, train.d_every)  # warm-up of the discriminator path
    cycles = max(1, steps // train.d_every)
    cycle = time_steps(trainer, p2 + train.d_every, cycles * train.d_every)
    phase2 = statistics.fmean(cycle)
    audio_s = train.batch_size * train.crop_frames / cfg.model.sample_rate
    params = sum(p.numel() for p in trainer.model.parameters())
    return {
        "preset": name,
        "channels": channels,
        "batch": train.batch_size,
        "crop": train.crop_frames,
        "sample_rate": cfg.model.sample_rate,
        "params_generator": params,
        "params_discriminator": sum(p.numel() for p in trainer.disc.parameters()),
        "phase1_step_s": phase1,
        "phase2_step_s": phase2,
        "phase1_samples_per_s": train.batch_size * train.crop_frames / phase1,
        "phase2_samples_per_s": train.batch_size * train.crop_frames / phase2,
        "phase1_x_realtime": audio_s / phase1,
        "phase2_x_realtime": audio_s / phase2,
    }


def bench_rave(python: str, batch: int, crop: int, steps: int, threads: int) -> dict | str:
    """RAVE v2 (mono, its own training_step) step times, or why they were not measured."""
    python = os.path.abspath(python)  # it runs from RAVE's folder (not resolved: keep the venv)
    probe = subprocess.run(
        [python, "-c", "import rave, os; print(os.path.dirname(rave.__file__))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode:
        return f"not measured (acids-rave not importable by {python})"
    proc = subprocess.run(
        [python, "-c", RAVE_SNIPPET, str(batch), str(crop), str(steps), str(threads)],
        cwd=probe.stdout.strip(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        return f"not measured (RAVE failed: {proc.stderr.strip().splitlines()[-1:]})"
    times = json.loads(proc.stdout.strip().splitlines()[-1])
    audio_s = batch * crop / 44100
    return {
        "batch": batch,
        "crop": crop,
        "channels": 1,
        "phase1_step_s": times["1"],
        "phase2_step_s": times["2"],
        "phase1_x_realtime": audio_s / times["1"],
        "phase2_x_realtime": audio_s / times["2"],
    }


def markdown(rows: list[dict], rave: dict | str) -> str:
    lines = [
        "| preset | N | batch x crop | G params | phase 1 step | x RT | phase 2 step | x RT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['channels']} | {r['batch']} x {r['crop']} | "
            f"{r['params_generator'] / 1e6:.2f} M | {r['phase1_step_s'] * 1e3:.0f} ms | "
            f"{r['phase1_x_realtime']:.1f} | {r['phase2_step_s'] * 1e3:.0f} ms | "
            f"{r['phase2_x_realtime']:.1f} |"
        )
    if isinstance(rave, dict):
        lines.append(
            f"| RAVE v2 (C=1) | 1 | {rave['batch']} x {rave['crop']} | - | "
            f"{rave['phase1_step_s'] * 1e3:.0f} ms | {rave['phase1_x_realtime']:.1f} | "
            f"{rave['phase2_step_s'] * 1e3:.0f} ms | {rave['phase2_x_realtime']:.1f} |"
        )
    else:
        lines.append(f"\nRAVE v2: {rave}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: test preset, 2 steps")
    p.add_argument("--presets", default=",".join(PRESET_NAMES))
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="timed steps per phase")
    p.add_argument("--batch", type=int, help="override every preset's batch size")
    p.add_argument("--crop", type=int, help="override every preset's crop (frames)")
    p.add_argument("--v2-batch", type=int, default=2, help="v2 batch on CPU (preset: 8)")
    p.add_argument("--v2-crop", type=int, default=65536, help="v2 crop on CPU (preset: 131072)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rave-python", help="python of a side venv with acids-rave installed")
    p.add_argument("--out", type=Path, default=Path("bench/results/train_bench.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = ["test"] if args.quick else args.presets.split(",")
    steps = 2 if args.quick else args.steps
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            batch, crop = args.batch, args.crop
            if name == "v2" and device.type == "cpu":
                batch, crop = batch or args.v2_batch, crop or args.v2_crop
            rows.append(bench_preset(name, args.channels, steps, batch, crop, device, Path(tmp)))
            print(f"{name}: done", file=sys.stderr)
    rave: dict | str = "not measured (no --rave-python given)"
    if args.rave_python:
        v2 = next((r for r in rows if r["preset"] == "v2"), rows[-1])
        rave = bench_rave(args.rave_python, v2["batch"], v2["crop"], steps, args.threads)
    result = {
        "device": str(device),
        "threads": args.threads,
        "torch": torch.__version__,
        "rows": rows,
        "rave_v2": rave,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(rows, rave))
    return 0


if __name__ == "__main__":
    sys.exit(main())
