"""Publishing a job's checkpoint into the registry, and reading published versions back out.

Publishing itself is `mcrave.publish` (strip training state, optional TorchScript, atomic
registry version); torch is imported here only when a publish happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mcrave.registry import (
    MANIFEST,
    RegistryError,
    check_model_name,
    latest_version,
    list_models,
    read_manifest,
)
from services.common.errors import InvalidArgument

CHUNK_BYTES = 1 << 20  # well under the 4 MiB default message limit


def publish_checkpoint(
    models: Path, name: str, checkpoint: Path, work_dir: Path, torchscript: bool, job_id: str
) -> tuple[int, int]:
    """Export `checkpoint` as `models/name/<next>`; returns (version, training step)."""
    from mcrave.publish import publish_checkpoint as publish

    return publish(
        models,
        name,
        checkpoint,
        torchscript=torchscript,
        info={"job_id": job_id},
        work_dir=work_dir,
    )


def published_versions(models: Path, name: str = "") -> list[tuple[str, int, dict[str, str]]]:
    """(name, version, sha256 by file) of every published version, or of one model's."""
    try:
        found = list_models(models)
    except RegistryError:
        return []
    if name:
        found = {name: found[name]} if name in found else {}
    out = []
    for model, versions in found.items():
        for version in versions:
            try:
                manifest = read_manifest(models / model / str(version), verify=False)
            except RegistryError:
                continue  # a corrupt version is not offered
            out.append((model, version, dict(manifest.get("sha256", {}))))
    return out


def require_model_name(name: str) -> None:
    """INVALID_ARGUMENT for a requested name that is not one folder under the registry."""
    try:
        check_model_name(name)
    except RegistryError as exc:
        raise InvalidArgument(str(exc), "model-name") from None


def version_dir(models: Path, name: str, version: int) -> Path:
    """A published version's folder (`version` 0 = latest); RegistryError if there is none,
    InvalidArgument for a name that is not one folder under the registry."""
    require_model_name(name)
    version = version or (latest_version(models, name) or 0)
    path = models / name / str(version)
    if not version or not (path / MANIFEST).is_file():
        raise RegistryError(f"no published version {name}/{version or 'latest'}")
    return path


def iter_files(path: Path) -> Iterator[tuple[str | None, int, bytes]]:
    """(file name, size, data) chunks of the version's files, manifest last; the name and size
    come with a file's first chunk only (None after), even for an empty file."""
    manifest = read_manifest(path, verify=True)  # never send a version that fails its sha256
    for fname in [*sorted(manifest.get("sha256", {})), MANIFEST]:
        size = (path / fname).stat().st_size
        with open(path / fname, "rb") as f:
            yield fname, size, f.read(CHUNK_BYTES)
            while data := f.read(CHUNK_BYTES):
                yield None, 0, data
