"""`mcrave train DATASET --config NAME -o RUN_DIR`: two-phase masked training (see training/README).

The channel count, rate and channel names come from the dataset manifest only (one source of
truth; github.com/acids-ircam/RAVE issue 273); a resumed run takes its whole config from the checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from mcrave.cli.options import add_old_spelling, require_option
from mcrave.config import PRESET_NAMES, PROJECTIONS, Config, apply_overrides, preset


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mcrave train", description=__doc__.splitlines()[0])
    p.add_argument("dataset", type=Path, help="prepared dataset folder (manifest.json + shards)")
    p.add_argument("--config", default="cpu-small", choices=PRESET_NAMES, help="preset name")
    p.add_argument("-o", "--output", type=Path, help="run folder (required)")
    add_old_spelling(p, "--out", "output", type=Path)
    p.add_argument("--steps", type=int, help="stop after this many steps (default: preset)")
    add_old_spelling(p, "--max-steps", "steps", type=int)
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.ckpt")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics here (0 = any)")
    p.add_argument(
        "--metrics-linger",
        type=float,
        default=0.0,
        help="keep serving metrics this many seconds after the run ends (short jobs)",
    )
    p.add_argument("--projection", default="identity", choices=PROJECTIONS)
    p.add_argument(
        "--init-from",
        type=Path,
        metavar="CKPT",
        help="start from the weights of another checkpoint where names and shapes match "
        "(e.g. a stereo model for a 4-channel one); not a resume",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (fix it for exact resume)")
    p.add_argument("--log-every", type=int, default=10, help="steps between progress-log lines")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config field, e.g. --set train.phase1_steps=20 (repeatable)",
    )
    return p


def fault_options() -> dict:
    """RunOptions' fault-injection hooks from MCRAVE_FAULT (tests): "sigterm_at:STEP[@RANK]" or
    "kill_before_rename". Read here only, so no other writer in the process is affected."""
    import os

    from mcrave.atomic import FAULT_ENV, fault_from_env

    spec = os.environ.get(FAULT_ENV, "")
    return {
        "sigterm_at": spec.removeprefix("sigterm_at:") if spec.startswith("sigterm_at:") else "",
        "before_rename": fault_from_env(),
    }


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv[1:])
    require_option(parser, args, "output")
    # heavy imports after argument parsing so `--help` stays fast
    from mcrave.atomic import atomic_write_bytes
    from mcrave.checkpoint import load_checkpoint
    from mcrave.data.dataset import CropDataset
    from mcrave.data.manifest import load_manifest
    from mcrave.training.distributed import init_from_env, shutdown
    from mcrave.training.trainer import RunOptions, Trainer

    last, resumed = args.output / "last.ckpt", None
    try:
        manifest = load_manifest(args.dataset)
        warm = None
        if args.init_from is not None:
            if args.resume:
                raise ValueError(
                    "--init-from starts a new run; it cannot be combined with --resume"
                )
            warm = load_checkpoint(args.init_from)
        if args.resume:
            if not last.exists():
                raise ValueError(f"{last}: nothing to resume")
            resumed = load_checkpoint(last)
            if "data_order" not in resumed["extra"]:
                raise ValueError(f"{last}: has no training state (not written by `mcrave train`)")
            cfg = Config.from_dict(resumed["config"])
            args.seed = int(resumed["extra"]["data_order"]["seed"])
            if cfg.model.channels != manifest["channels"]:
                raise ValueError(
                    f"{args.dataset}: {manifest['channels']} channels, the run has "
                    f"{cfg.model.channels}"
                )
        else:
            if last.exists():
                raise ValueError(f"{args.output}: already holds a run (pass --resume to continue)")
            cfg = preset(
                args.config,
                channels=int(manifest["channels"]),
                projection=args.projection,
                sample_rate=int(manifest["sample_rate"]),
                channel_names=tuple(manifest.get("channel_names") or ()),
            )
            cfg = apply_overrides(cfg, args.set)
        if args.steps is not None:
            cfg = dataclasses.replace(
                cfg, train=dataclasses.replace(cfg.train, max_steps=args.steps)
            )
        if cfg.train.crop_frames % cfg.model.ratio:
            raise ValueError(
                f"crop_frames {cfg.train.crop_frames} is not a multiple of the model "
                f"ratio {cfg.model.ratio}"
            )
        crop, seed = cfg.train.crop_frames, args.seed
        train = CropDataset(args.dataset, "train", crop, seed, augment=True)
        has_valid = any(f["split"] == "valid" for f in manifest["files"])
        valid = CropDataset(args.dataset, "valid", crop, seed) if has_valid else None
    except (ValueError, OSError) as exc:
        print(f"mcrave train: {exc}", file=sys.stderr)
        return 2

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = init_from_env(device)
    if device.type == "cuda" and info.world > 1:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if info.is_main and not args.resume:
        args.output.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(
            args.output / "config.json", json.dumps(cfg.to_dict(), indent=2).encode()
        )
    opts = RunOptions(
        args.output,
        cfg.train.max_steps,
        args.seed,
        args.metrics_port,
        args.log_every,
        args.metrics_linger,
        **fault_options(),
    )
    trainer = Trainer(cfg, train, valid, opts, info, device)
    if warm is not None:
        copied, total = trainer.warm_start(warm)
        if info.is_main:
            print(f"mcrave train: {copied} of {total} tensors from {args.init_from}", flush=True)
    if resumed is not None:
        try:
            trainer.resume(resumed)
        except ValueError as exc:  # e.g. another world size: the data order would differ
            print(f"mcrave train: {last}: {exc}", file=sys.stderr)
            return 2
    try:
        outcome = trainer.fit()
    except ValueError as exc:  # e.g. the metrics port is taken
        print(f"mcrave train: {exc}", file=sys.stderr)
        return 2
    if outcome == "diverged":
        print(
            f"mcrave train: non-finite loss at step {trainer.step}; last good checkpoint kept",
            file=sys.stderr,
        )
        return 1
    if outcome != "done":
        print(
            f"mcrave train: stopped by {outcome} at step {trainer.step} (rank {info.rank})",
            file=sys.stderr,
        )
    shutdown(info)
    return 0
