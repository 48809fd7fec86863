"""Registry polling: new versions appear, corrupt ones are skipped, logged and counted once."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from services_helpers import publish_tiny

from mcrave.registry import publish_version
from services.common.errors import NotFound
from services.common.registry_watch import RegistryWatcher


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    publish_tiny(root, seed=0)
    return root


def _watcher(root: Path) -> tuple[RegistryWatcher, list, list]:
    corrupt: list = []
    loaded: list = []
    w = RegistryWatcher(
        root, on_loaded=loaded.append, on_corrupt=lambda n, v, why: corrupt.append((n, v, why))
    )
    w.poll()
    return w, loaded, corrupt


def test_new_versions_appear_and_latest_moves(root: Path) -> None:
    w, loaded, _ = _watcher(root)
    first = w.get("tiny")
    assert (first.version, len(loaded)) == (1, 1)
    publish_tiny(root, seed=1)
    publish_tiny(root, name="other", seed=2)
    w.poll()
    assert w.get("tiny").version == 2 and w.get("tiny", 1) is first  # old object kept, not reloaded
    assert w.get("other").version == 1
    assert w.get("tiny").fingerprint != first.fingerprint
    w.poll()
    assert len(loaded) == 3  # an unchanged version is never loaded twice
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        w.get("nope")
    with pytest.raises(NotFound, match="no loadable version 7"):
        w.get("tiny", 7)
    shutil.rmtree(root / "tiny" / "2")
    w.poll()
    assert w.get("tiny") is first


def test_staging_folders_are_invisible(root: Path) -> None:
    w, loaded, corrupt = _watcher(root)
    (root / "tiny" / ".staging-123-456").mkdir()
    (root / "tiny" / ".staging-123-456" / "model.ckpt").write_bytes(b"half")
    w.poll()
    assert len(loaded) == 1 and not corrupt


def test_corrupt_versions_skipped_logged_counted_once(root: Path, caplog) -> None:
    good = root / "tiny" / "1"
    bad_sha = shutil.copytree(good, root / "tiny" / "2")
    data = bytearray((bad_sha / "model.ckpt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad_sha / "model.ckpt").write_bytes(bytes(data))
    bad_manifest = shutil.copytree(good, root / "tiny" / "3")
    (bad_manifest / "manifest.json").write_text("{not json")
    garbage = root.parent / "garbage.ckpt"  # sha256 fine, but not a loadable checkpoint
    garbage.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    assert publish_version(root, "tiny", garbage) == 4
    with caplog.at_level(logging.WARNING):
        w, loaded, corrupt = _watcher(root)
        w.poll()  # polling again does not count them again
    assert sorted(v for _, v, _ in corrupt) == [2, 3, 4]
    assert w.corrupt == [("tiny", 2), ("tiny", 3), ("tiny", 4)]
    assert "sha256 mismatch" in dict((v, why) for _, v, why in corrupt)[2]
    assert w.get("tiny").version == 1 and [lv.version for lv in loaded] == [1]
    assert sum("skipping corrupt model tiny" in r.message for r in caplog.records) == 3
    # repairing a version's files makes it loadable on the next poll
    shutil.rmtree(bad_manifest)
    shutil.copytree(good, bad_manifest)
    manifest = json.loads((bad_manifest / "manifest.json").read_text())
    manifest["version"] = 3
    (bad_manifest / "manifest.json").write_text(json.dumps(manifest))
    w.poll()
    assert w.get("tiny", 3).version == 3 and ("tiny", 3) not in w.corrupt


def test_corrupt_counter_reaches_metrics(root: Path, tmp_path: Path) -> None:
    from services_helpers import ServerThread

    from services.encoder.servicer import SERVICE

    (root / "tiny" / "2").mkdir()
    (root / "tiny" / "2" / "manifest.json").write_text("[]")
    server = ServerThread(SERVICE, root)
    try:
        assert server.sample("mcrave_registry_corrupt_versions_total", {"model": "tiny"}) == 1
        fp = server.running.runtime.watcher.get("tiny").fingerprint
        assert (
            server.sample("mcrave_model_info", {"model": "tiny", "version": "1", "fingerprint": fp})
            == 1
        )
    finally:
        server.stop()


def test_not_ready_until_a_model_loads(tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from services_helpers import ServerThread, channel

    from services.decoder.servicer import SERVICE

    root = tmp_path / "models"
    root.mkdir()
    server = ServerThread(SERVICE, root, poll_interval_s=0.1)
    try:
        with channel(server.target) as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=30
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            publish_tiny(root)  # appears atomically; the next poll loads it
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
    finally:
        server.stop()
