"""The committed generated gRPC code is exactly what protos/generate.py produces now."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "clients" / "python" / "mcrave_client" / "proto"


def test_generated_code_is_current(tmp_path: Path) -> None:
    out = tmp_path / "proto"
    subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    fresh = {p.name: p.read_bytes() for p in out.iterdir()}
    committed = {p.name: p.read_bytes() for p in COMMITTED.iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed), "run `python protos/generate.py` and commit"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run `python protos/generate.py` and commit"


def test_every_proto_has_modules_and_imports_resolve() -> None:
    for proto in sorted((ROOT / "protos" / "mcrave" / "v1").glob("*.proto")):
        for suffix in ("_pb2", "_pb2_grpc"):
            importlib.import_module(f"mcrave_client.proto.{proto.stem}{suffix}")
    encoder_grpc = importlib.import_module("mcrave_client.proto.encoder_pb2_grpc")
    decoder_grpc = importlib.import_module("mcrave_client.proto.decoder_pb2_grpc")
    models_grpc = importlib.import_module("mcrave_client.proto.models_pb2_grpc")
    assert hasattr(encoder_grpc, "EncoderServiceStub")
    assert hasattr(decoder_grpc, "DecoderServiceStub")
    assert hasattr(models_grpc, "ModelServiceStub")
