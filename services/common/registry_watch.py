"""Polls a model registry folder and keeps every valid version loaded, ready for new streams.

Polling (listing + stat of each version's manifest) works on network file systems, where inotify
does not. A version is exposed only after its manifest, sha256 sums and checkpoint all check out
and its streaming engine is built, so a stream never sees half a model. A corrupt version is
skipped, logged and counted once (per state of its files: fixing them makes it retried). Open
streams hold their `LoadedVersion`, so a reload never changes the version under them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcrave import registry
from mcrave.config import DEFAULT_RUNTIME
from services.common.errors import NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LoadedVersion:
    """One model version, loaded: its identity and its streaming engine."""

    name: str
    version: int
    fingerprint: str  # sha256 of model.ckpt from the manifest
    created: str
    engine: Any  # mcrave.streaming.StreamingEngine


def load_version(
    version_dir: Path, device: str | None = None, runtime: str = DEFAULT_RUNTIME
) -> LoadedVersion:
    """Verify and load one registry version (raises on any problem; loads no pickled code), its
    engine on `runtime`."""
    from mcrave.checkpoint import load_model
    from mcrave.streaming import StreamingEngine

    model, meta = load_model(version_dir)  # resolve_model verifies every sha256 in the manifest
    manifest = meta["manifest"]
    if manifest is None:
        raise registry.RegistryError(f"{version_dir}: no {registry.MANIFEST}")
    return LoadedVersion(
        name=version_dir.parent.name,
        version=int(version_dir.name),
        fingerprint=manifest["sha256"][registry.CHECKPOINT],
        created=str(manifest.get("created", "")),
        engine=StreamingEngine(model, device=device, runtime=runtime),
    )


def _signature(version_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """What identifies a version folder's state cheaply: name, mtime and size of each file."""
    try:
        entries = sorted(os.scandir(version_dir), key=lambda e: e.name)
        return tuple((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in entries)
    except OSError:
        return ()


class RegistryWatcher:
    """The loaded view of a registry; `poll()` brings it up to date (call it from a thread)."""

    def __init__(
        self,
        root: str | Path,
        *,
        load: Callable[[Path], LoadedVersion] = load_version,
        on_loaded: Callable[[LoadedVersion], None] | None = None,
        on_unloaded: Callable[[LoadedVersion], None] | None = None,
        on_corrupt: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self._load = load
        self._on_loaded = on_loaded or (lambda lv: None)
        self._on_unloaded = on_unloaded or (lambda lv: None)
        self._on_corrupt = on_corrupt or (lambda name, version, why: None)
        self._loaded: dict[tuple[str, int], tuple[tuple, LoadedVersion]] = {}
        self._corrupt: dict[tuple[str, int], tuple] = {}
        # swapped whole, so readers on the event loop need no lock
        self._models: dict[str, dict[int, LoadedVersion]] = {}
        self._poll_lock = threading.Lock()

    def poll(self) -> None:
        """Load new or changed versions, forget removed ones (one poll at a time)."""
        with self._poll_lock:
            self._poll()

    def _poll(self) -> None:
        seen: set[tuple[str, int]] = set()
        for name, found in registry.list_models(self.root).items():
            for version in found:
                key = (name, version)
                seen.add(key)
                self._visit(key, self.root / name / str(version))
        for key in [k for k in self._loaded if k not in seen]:
            _, lv = self._loaded.pop(key)
            log.info("model %s version %d removed from the registry", *key)
            self._on_unloaded(lv)
        self._corrupt = {k: v for k, v in self._corrupt.items() if k in seen}
        models: dict[str, dict[int, LoadedVersion]] = {}
        for (name, version), (_, lv) in sorted(self._loaded.items()):
            models.setdefault(name, {})[version] = lv
        self._models = models

    def _visit(self, key: tuple[str, int], version_dir: Path) -> None:
        sig = _signature(version_dir)
        known = self._loaded.get(key)
        if known is not None and known[0] == sig:
            return
        if key in self._corrupt and self._corrupt[key] == sig:
            return  # already counted; retried once one of its files changes
        try:
            lv = self._load(version_dir)
        except Exception as error:  # noqa: BLE001 - any failure makes the version unusable
            self._corrupt[key] = sig
            log.warning("skipping corrupt model %s version %d: %s", *key, error)
            self._on_corrupt(key[0], key[1], str(error))
            return
        if known is not None:
            self._on_unloaded(known[1])
        self._loaded[key] = (sig, lv)
        self._corrupt.pop(key, None)
        log.info("loaded model %s version %d (%s)", lv.name, lv.version, lv.fingerprint[:12])
        self._on_loaded(lv)

    @property
    def corrupt(self) -> list[tuple[str, int]]:
        return sorted(self._corrupt)

    def models(self) -> dict[str, dict[int, LoadedVersion]]:
        """{name: {version: LoadedVersion}} of every loadable version."""
        return self._models

    def get(self, name: str, version: int = 0) -> LoadedVersion:
        """The requested version (0 = latest); NotFound names what exists instead."""
        models = self._models
        if name not in models:
            known = ", ".join(sorted(models)) or "none"
            raise NotFound(f"unknown model {name!r} (loaded models: {known})", "unknown-model")
        versions = models[name]
        if version == 0:
            return versions[max(versions)]
        if version not in versions:
            raise NotFound(
                f"model {name!r} has no loadable version {version} (versions: {sorted(versions)})",
                "unknown-version",
            )
        return versions[version]
