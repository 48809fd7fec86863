"""Model registry on a plain directory tree: MODELS/<name>/<version:int>/.

Each version folder holds `model.ckpt`, optionally `model.ts`, and `manifest.json` (name, version,
config summary, sha256 of every file, created). A version appears atomically: it is assembled in a
hidden staging folder and renamed into place, so a reader (or a poller on a network file system)
never sees half a version. The latest version is the highest integer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcrave.atomic import fsync_dir

CHECKPOINT = "model.ckpt"
TORCHSCRIPT = "model.ts"
MANIFEST = "manifest.json"


class RegistryError(ValueError):
    """A registry path or version that cannot be used; the message says why."""


@dataclass(frozen=True)
class ResolvedModel:
    checkpoint: Path
    name: str | None = None
    version: int | None = None
    manifest: dict[str, Any] | None = None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions(entry: Path) -> list[int]:
    """Published versions of one model folder, ascending (staging folders ignored)."""
    if not entry.is_dir():
        return []
    return sorted(int(p.name) for p in entry.iterdir() if p.is_dir() and p.name.isdigit())


def latest_version(root: str | Path, name: str) -> int | None:
    found = versions(Path(root) / name)
    return found[-1] if found else None


def list_models(root: str | Path) -> dict[str, list[int]]:
    """{name: [versions]} for every model folder under `root` that has at least one version."""
    root = Path(root)
    if not root.is_dir():
        raise RegistryError(f"{root}: registry folder does not exist")
    out = {
        p.name: versions(p)
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".")
    }
    return {k: v for k, v in out.items() if v}


def read_manifest(version_dir: Path, *, verify: bool = True) -> dict[str, Any]:
    """The version's manifest; with `verify`, every listed file's sha256 is checked."""
    try:
        manifest = json.loads((version_dir / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise RegistryError(f"{version_dir}: no {MANIFEST}") from exc
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{version_dir}/{MANIFEST}: invalid JSON ({exc})") from exc
    files = manifest.get("sha256")
    if not isinstance(files, dict) or CHECKPOINT not in files:
        raise RegistryError(f"{version_dir}/{MANIFEST}: missing sha256 of {CHECKPOINT}")
    if verify:
        for fname, digest in files.items():
            path = version_dir / fname
            if not path.is_file():
                raise RegistryError(f"{path}: listed in the manifest but missing")
            if sha256_file(path) != digest:
                raise RegistryError(f"{path}: sha256 mismatch (corrupt or partially copied)")
    return manifest


def resolve_model(source: str | Path) -> ResolvedModel:
    """A checkpoint file, a version folder (`models/NAME/3`) or a model folder (latest version)."""
    path = Path(source)
    if path.is_file():
        return ResolvedModel(checkpoint=path)
    if not path.exists():
        raise RegistryError(f"{path}: no such checkpoint or registry entry")
    if (path / CHECKPOINT).is_file():
        manifest = read_manifest(path) if (path / MANIFEST).exists() else None
        version = int(path.name) if path.name.isdigit() else None
        name = path.parent.name if version is not None else path.name
        return ResolvedModel(path / CHECKPOINT, name, version, manifest)
    found = versions(path)
    if not found:
        raise RegistryError(
            f"{path}: registry entry has no versions (expected {path}/<int>/{CHECKPOINT})"
        )
    return resolve_model(path / str(found[-1]))


def check_model_name(name: str) -> None:
    """A model name is one folder right under the registry root, never a version number:
    RegistryError for anything that could point elsewhere (`..`, a separator, a hidden name)."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or name.isdigit():
        raise RegistryError(f"invalid model name {name!r}")


def publish_version(
    root: str | Path,
    name: str,
    checkpoint: str | Path,
    *,
    torchscript: str | Path | None = None,
    info: dict[str, Any] | None = None,
) -> int:
    """Copy a checkpoint (and optional .ts) into `root/name/<next version>` atomically."""
    check_model_name(name)
    entry = Path(root) / name
    entry.mkdir(parents=True, exist_ok=True)
    staging = entry / f".staging-{os.getpid()}-{time.monotonic_ns()}"
    staging.mkdir()
    try:
        files = {CHECKPOINT: Path(checkpoint)}
        if torchscript is not None:
            files[TORCHSCRIPT] = Path(torchscript)
        for fname, src in files.items():
            shutil.copyfile(src, staging / fname)
            with open(staging / fname, "rb") as f:
                os.fsync(f.fileno())
        while True:
            version = (latest_version(root, name) or 0) + 1
            manifest = {
                "name": name,
                "version": version,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "sha256": {fname: sha256_file(staging / fname) for fname in files},
                **(info or {}),
            }
            with open(staging / MANIFEST, "w") as f:
                json.dump(manifest, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(staging)
            try:
                os.rename(staging, entry / str(version))  # fails if another publisher took it
            except OSError:
                continue
            fsync_dir(entry)
            return version
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
