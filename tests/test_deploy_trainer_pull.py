"""The pull mirror (`mcrave serve decoder --pull-from`) against a trainer that sends what it
likes: names that would leave the registry, unlisted or altered files, too many bytes. Nothing
lands outside `models/`, nothing half-checked lands inside, and plaintext off loopback needs
`--insecure`."""

from __future__ import annotations

import hashlib
import json
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from mcrave_client.connection import Connection
from mcrave_client.errors import ClientError
from mcrave_client.proto import trainer_pb2, trainer_pb2_grpc
from mcrave_client.trainer import TrainerClient

from services.trainer.pull import RegistryMirror, start_mirror

WEIGHTS = b"weights" * 100
GOOD = {"model.ckpt": hashlib.sha256(WEIGHTS).hexdigest()}


def manifest(sha: dict[str, str]) -> bytes:
    return json.dumps({"sha256": sha}).encode()


class RogueTrainer(trainer_pb2_grpc.TrainerServiceServicer):
    """Offers one version per entry of `versions`: name -> the (file, data) chunks it sends."""

    def __init__(self, versions: dict[str, list[tuple[str, bytes]]], sha=GOOD) -> None:
        self.versions, self.sha = versions, sha

    def ListVersions(self, request, context):  # noqa: N802
        found = [
            trainer_pb2.ModelVersion(name=n, version=1, sha256=self.sha) for n in self.versions
        ]
        return trainer_pb2.ListVersionsResponse(versions=found)

    def FetchModel(self, request, context):  # noqa: N802
        meta = trainer_pb2.ModelVersion(name=request.name, version=1, sha256=self.sha)
        for i, (fname, data) in enumerate(self.versions[request.name]):
            yield trainer_pb2.FileChunk(version=meta if i == 0 else None, file=fname, data=data)


@pytest.fixture
def serve():
    servers = []

    def start(servicer: RogueTrainer) -> TrainerClient:
        server = grpc.server(futures.ThreadPoolExecutor(2))
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return TrainerClient(Connection(f"127.0.0.1:{port}"))

    yield start
    for server in servers:
        server.stop(0)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_names_from_the_trainer_never_leave_the_registry(tmp_path, serve) -> None:
    """Before: a version named ../escaped landed in tmp/escaped, outside models/."""
    models = tmp_path / "models"
    models.mkdir()
    good = [("model.ckpt", WEIGHTS), ("manifest.json", manifest(GOOD))]
    client = serve(RogueTrainer({"../escaped": good, "..": good, "7": good, "ok": good}))
    mirror = RegistryMirror(client.connection, models)
    try:
        added = mirror.sync_once()
    finally:
        mirror.stop()
    assert added == [models / "ok" / "1"]
    assert files_under(tmp_path) == {"models/ok/1/model.ckpt", "models/ok/1/manifest.json"}


@pytest.mark.parametrize(
    ("chunks", "words"),
    [
        ([("../model.ckpt", WEIGHTS)], "bad file name"),
        ([("/tmp/model.ckpt", WEIGHTS)], "bad file name"),
        ([("sub\\model.ckpt", WEIGHTS)], "bad file name"),
        # every file is checked: an unlisted one is refused, not just left unverified
        ([("model.ckpt", WEIGHTS), ("evil.py", b"x"), ("manifest.json", manifest(GOOD))], "files"),
        ([("model.ckpt", WEIGHTS + b"!"), ("manifest.json", manifest(GOOD))], "sha256"),
        ([("model.ckpt", WEIGHTS), ("manifest.json", manifest({}))], "disagrees"),
        ([("model.ckpt", WEIGHTS), ("model.ckpt", WEIGHTS)], "twice"),
    ],
)
def test_fetch_refuses_bad_files_and_leaves_nothing(tmp_path, serve, chunks, words) -> None:
    models = tmp_path / "models"
    client = serve(RogueTrainer({"m": chunks}))
    with pytest.raises(ClientError, match=words):
        client.fetch("m", 1, models)
    assert files_under(tmp_path) == set()  # no file outside, no staging or version left inside


def test_fetch_caps_the_size(tmp_path, serve) -> None:
    client = serve(RogueTrainer({"m": [("model.ckpt", WEIGHTS), ("manifest.json", b"{}")]}))
    with pytest.raises(ClientError, match="cap"):
        client.fetch("m", 1, tmp_path / "models", max_bytes=len(WEIGHTS) - 1)
    assert files_under(tmp_path) == set()


def test_plaintext_pull_off_loopback_needs_insecure(tmp_path) -> None:
    with pytest.raises(ValueError, match="--insecure"):
        start_mirror("192.0.2.1:50053", tmp_path / "models")
    assert not (tmp_path / "models").exists()
