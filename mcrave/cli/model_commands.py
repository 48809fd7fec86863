"""`mcrave new`, `mcrave info` and `mcrave export`: create, describe and export models."""

from __future__ import annotations

import argparse
import json

import torch

from mcrave.cli.console import CLIError, run_command
from mcrave.config import PRESET_NAMES, PROJECTIONS, WEIGHT_PRECISIONS, preset


def _new(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="mcrave new", description="Create an untrained model checkpoint."
    )
    p.add_argument("--config", choices=PRESET_NAMES, default="test")
    p.add_argument("--channels", type=int, required=True)
    p.add_argument("--projection", choices=PROJECTIONS, default="identity")
    p.add_argument("--sr", type=int, default=44100, help="sample rate (Hz)")
    p.add_argument("--names", default="", help="comma-separated channel names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = p.parse_args(argv)

    def body() -> int:
        from mcrave.checkpoint import save_checkpoint
        from mcrave.model import MCRave

        names = tuple(n for n in args.names.split(",") if n)
        cfg = preset(
            args.config,
            channels=args.channels,
            projection=args.projection,
            sample_rate=args.sr,
            channel_names=names,
        )
        torch.manual_seed(args.seed)
        model = MCRave(cfg.model)
        path = save_checkpoint(args.output, model, config=cfg, force=args.force)
        print(f"wrote untrained {args.config} model ({args.channels} channels) to {path}")
        return 0

    return run_command("new", body)


def describe(meta: dict, model) -> dict:
    """The facts a user (or a service's GetModel) needs about a model."""
    params = sum(p.numel() for p in model.parameters())
    return {
        "path": meta["path"],
        "preset": model.cfg.preset,
        "channels": model.channels,
        "channel_names": list(model.cfg.names),
        "sample_rate": model.sample_rate,
        "ratio": model.ratio,
        "latent_size": model.latent_size,
        "latency_samples": model.latency,  # total: PQMF + the spatial stage's STFT
        "latency_ms": round(1000 * model.latency / model.sample_rate, 2),
        "spatial_stage": model.cfg.spatial,
        "spatial_parameters": sum(p.numel() for p in model.decoder.spatial.parameters())
        if model.decoder.spatial is not None
        else 0,
        "projection": model.cfg.projection,
        "parameters": params,
        "step": meta["step"],
        "code_version": meta["code_version"],
        "created": meta["created"],
        "registry": {k: meta["manifest"][k] for k in ("name", "version")}
        if meta.get("manifest")
        else None,
    }


def _info(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mcrave info", description="Describe a model.")
    p.add_argument("model", help="checkpoint file or registry entry (models/NAME[/VERSION])")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    def body() -> int:
        from mcrave.checkpoint import load_model

        model, meta = load_model(args.model)
        info = describe(meta, model)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            for key, value in info.items():
                print(f"{key:>16}: {value}")
        return 0

    return run_command("info", body)


def _export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="mcrave export", description="Export a TorchScript .ts for nn~."
    )
    p.add_argument("model", help="checkpoint file or registry entry")
    p.add_argument("-o", "--output", required=True, help="output .ts path")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument(
        "--pca-data",
        nargs="+",
        metavar="AUDIO",
        help="rank the latent dimensions by their variance on these N-channel files or folders "
        "(default: the ranking the trainer stored in the checkpoint, if any)",
    )
    p.add_argument(
        "--precision",
        choices=WEIGHT_PRECISIONS,
        default="float32",
        help="conv weight precision (default %(default)s; bf16 and int8 run large models faster "
        "on CPU but are not float32-equal: bench/README.md)",
    )
    args = p.parse_args(argv)

    def body() -> int:
        from mcrave.audio import audio_files
        from mcrave.checkpoint import load_model
        from mcrave.export import LatentPCA, export_nn_tilde
        from mcrave.export.latent_pca import fit_on_audio

        if not args.output.endswith(".ts"):
            raise CLIError(f"{args.output}: nn~ loads .ts files; name the output *.ts")
        model, meta = load_model(args.model)
        if args.pca_data:
            files = [f for spec in args.pca_data for f in audio_files(spec)]
            pca = fit_on_audio(model, files)
        else:
            pca = LatentPCA.from_dict(meta["latent_pca"]) if "latent_pca" in meta else None
        path = export_nn_tilde(
            model, args.output, pca=pca, precision=args.precision, force=args.force
        )
        print(
            f"wrote {path}: encode [{model.channels},1,{model.latent_size},{model.ratio}] "
            f"decode [{model.latent_size},{model.ratio},{model.channels},1] forward, attribute present"
        )
        if pca is None:
            print("latents in the model's own order (no ranking stored: pass --pca-data)")
        else:
            top = min(4, model.latent_size)
            print(
                f"latents ranked by variance: the first {top} carry "
                f"{100 * float(pca.explained[:top].sum()):.1f} % of it"
            )
        return 0

    return run_command("export", body)


def _publish(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="mcrave publish", description="Publish a checkpoint into a registry."
    )
    p.add_argument("checkpoint", help="checkpoint file (a training run's last.ckpt works)")
    p.add_argument("--models", required=True, help="registry folder (MODELS/<name>/<version>/)")
    p.add_argument("--name", required=True, help="model name in the registry")
    p.add_argument("--no-ts", action="store_true", help="skip the TorchScript export for nn~")
    args = p.parse_args(argv)

    def body() -> int:
        from mcrave.publish import publish_checkpoint

        version, step = publish_checkpoint(
            args.models, args.name, args.checkpoint, torchscript=not args.no_ts
        )
        print(f"published {args.name} version {version} (training step {step}) in {args.models}")
        return 0

    return run_command("publish", body)


_COMMANDS = {"new": _new, "info": _info, "export": _export, "publish": _publish}


def main(argv: list[str]) -> int:
    return _COMMANDS[argv[0]](argv[1:])
