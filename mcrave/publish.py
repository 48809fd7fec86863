"""Publish a (training) checkpoint into a registry as a lean, servable version.

The training state (optimisers, discriminator) is stripped, a TorchScript export for nn~ can be
added, and `mcrave.registry.publish_version` makes the version appear atomically, so encoders and
decoders polling the registry pick it up without a restart.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mcrave.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mcrave.config import Config
from mcrave.registry import publish_version


def publish_checkpoint(
    models: str | Path,
    name: str,
    checkpoint: str | Path,
    *,
    torchscript: bool = True,
    info: dict[str, Any] | None = None,
    work_dir: str | Path | None = None,
) -> tuple[int, int]:
    """Publish `checkpoint` as `models/name/<next version>`; returns (version, training step)."""
    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload).eval()
    step = int(payload["step"])
    work = Path(work_dir) if work_dir is not None else Path(models)
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work, prefix=".publish-") as tmp:
        pca = payload.get("latent_pca")
        slim = save_checkpoint(
            Path(tmp) / "model.ckpt",
            model,
            step=step,
            config=Config.from_dict(payload["config"]),
            latent_pca=pca,
        )
        ts = None
        if torchscript:
            from mcrave.export import LatentPCA, export_nn_tilde

            ranking = LatentPCA.from_dict(pca) if pca is not None else None
            ts = export_nn_tilde(model, Path(tmp) / "model.ts", pca=ranking)
        version = publish_version(
            models, name, slim, torchscript=ts, info={"step": step, **(info or {})}
        )
    return version, step
