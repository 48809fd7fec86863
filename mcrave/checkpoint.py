"""Self-describing, atomically written model checkpoints, loaded without executing pickled code.

A checkpoint is a `torch.save`d dict of tensors and plain values (config, channel names, step,
code version, optional training state), read back with `weights_only=True`: the model is always
rebuilt from the stored config, never from command-line flags.
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mcrave import __version__
from mcrave.atomic import atomic_write
from mcrave.config import Config
from mcrave.model import MCRave

FORMAT = "mcrave-checkpoint"
FORMAT_VERSION = 1


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{__version__}+{rev}" if rev else __version__


def save_checkpoint(
    path: str | Path,
    model: MCRave,
    *,
    step: int = 0,
    extra: dict[str, Any] | None = None,
    config: Config | None = None,
    force: bool = False,
    before_rename: Callable[[], None] | None = None,
    latent_pca: dict[str, Any] | None = None,
) -> Path:
    """Write `model` (and optional training state in `extra`) to `path` atomically
    (`before_rename`: see `mcrave.atomic.atomic_write`). `latent_pca` (`LatentPCA.to_dict()`)
    ranks the latents for the nn~ export.

    `config` defaults to the model's config with default training settings; trainers pass theirs.
    """
    cfg = config if config is not None else Config(model=model.cfg)
    if cfg.model != model.cfg:
        raise ValueError("config.model does not describe the model being saved")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "channels": model.cfg.channels,
        "sample_rate": model.cfg.sample_rate,
        "channel_names": list(model.cfg.names),
        "projection": model.cfg.projection,
        "ratio": model.cfg.ratio,
        "latent_size": model.cfg.latent_size,
        "latency": model.latency,
        "code_version": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "step": int(step),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    if latent_pca is not None:
        payload["latent_pca"] = latent_pca
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(
        path, lambda f: f.write(buffer.getbuffer()), force=force, before_rename=before_rename
    )


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


def _what_it_is(path: Path) -> str:
    """One sentence for a file torch cannot read as a checkpoint (torch's own message is an essay
    on `weights_only`): name what it looks like and what to pass instead."""
    import zipfile

    if _is_torchscript(path):
        return (
            "is a TorchScript export (for nn~), not a checkpoint; pass the model.ckpt beside "
            "it or the registry entry (models/NAME)"
        )
    if zipfile.is_zipfile(path):
        return (
            "is a torch file but not an mcrave checkpoint (a RAVE or Lightning checkpoint?); "
            "mcrave reads checkpoints written by `mcrave train` or `mcrave new`"
        )
    return "is not a checkpoint (not a torch file, or truncated)"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint file; errors name the file and the problem."""
    path = Path(path)
    if _is_torchscript(path):  # before torch.load, which would warn and dispatch to jit.load
        raise ValueError(f"{path}: {_what_it_is(path)}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many kinds for truncated or foreign files
        raise ValueError(f"{path}: {_what_it_is(path)}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not an mcrave checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format version {payload.get('format_version')} is not supported "
            f"(this mcrave reads version {FORMAT_VERSION})"
        )
    return payload


def model_from_checkpoint(payload: dict[str, Any]) -> MCRave:
    model = MCRave(Config.from_dict(payload["config"]).model)
    model.load_state_dict(payload["model_state"])
    return model


def load_model(
    source: str | Path, device: str | torch.device | None = None
) -> tuple[MCRave, dict[str, Any]]:
    """Load a model from a checkpoint file or a registry entry (`models/NAME[/VERSION]`).

    Returns the model (eval mode) and the checkpoint's metadata (everything but the weights), plus
    `path` and, for registry entries, the `manifest`.
    """
    from mcrave.registry import resolve_model  # registry builds on this module

    resolved = resolve_model(source)
    payload = load_checkpoint(resolved.checkpoint)
    model = model_from_checkpoint(payload)
    if device is not None:
        model = model.to(device)
    model.eval()
    meta = {k: v for k, v in payload.items() if k not in ("model_state", "extra")}
    meta["path"] = str(resolved.checkpoint)
    meta["manifest"] = resolved.manifest
    return model, meta
