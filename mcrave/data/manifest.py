"""The dataset manifest: `DATASET/manifest.json`, written by `mcrave prepare`, read by training.

Format (version 1)::

    {"format": "mcrave-dataset", "version": 1, "channels": N, "sample_rate": sr,
     "channel_names": [...], "split": {"seed": s, "valid_fraction": f},
     "files": [{"source": path-or-group, "sources": [paths], "sha256": hex, "split": "train"|"valid",
                "shard": "shards/<id>.npy", "frames": T, "duration_s": T / sr,
                "source_sample_rate": r, "source_frames": n, "dropped_frames": d}],
     "skipped": [{"source": ..., "sha256": ..., "reason": ...}],
     "totals": {"train": {"files": k, "frames": T, "duration_s": s}, "valid": {...}}}

Each shard is a float32 `.npy` array of shape (frames, N), meant to be memory-mapped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcrave.atomic import atomic_write_bytes

FORMAT = "mcrave-dataset"
VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "valid")


class ManifestError(ValueError):
    """The dataset folder holds no valid mcrave manifest."""


def new_manifest(
    channels: int, sample_rate: int, channel_names: list[str], seed: int, valid_fraction: float
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "channels": channels,
        "sample_rate": sample_rate,
        "channel_names": list(channel_names),
        "split": {"seed": seed, "valid_fraction": valid_fraction},
        "files": [],
        "skipped": [],
        "totals": {},
    }


def load_manifest(root: str | Path) -> dict[str, Any]:
    """Read and check DATASET/manifest.json (format, version, shapes of the entries)."""
    path = Path(root) / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no dataset manifest (run `mcrave prepare`)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: unreadable manifest ({e})") from None
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ManifestError(f"{path}: not an {FORMAT} v{VERSION} manifest")
    for entry in doc.get("files", []):
        if entry.get("split") not in SPLITS or "shard" not in entry or "frames" not in entry:
            raise ManifestError(f"{path}: malformed file entry {entry.get('source')!r}")
    doc.setdefault("skipped", [])
    return doc


def save_manifest(root: str | Path, doc: dict[str, Any]) -> None:
    """Recompute totals and write the manifest atomically."""
    sr = doc["sample_rate"]
    doc["totals"] = {
        split: {
            "files": len(files),
            "frames": sum(f["frames"] for f in files),
            "duration_s": round(sum(f["frames"] for f in files) / sr, 3),
        }
        for split in SPLITS
        for files in [[f for f in doc["files"] if f["split"] == split]]
    }
    atomic_write_bytes(Path(root) / MANIFEST, (json.dumps(doc, indent=1) + "\n").encode())
