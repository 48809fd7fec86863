"""The committed generated gRPC code is exactly what protos/generate.py produces now."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

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


def _generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_declared_protobuf_range_is_what_the_generated_code_needs() -> None:
    """The generated code sets no runtime floor above its gencode version, and both packages
    declare exactly that version as their lower bound (and the next major as their upper)."""
    gencode = _generator().GENCODE_PROTOBUF
    for path in COMMITTED.glob("*.py"):
        text = path.read_text()
        assert "_runtime_version" not in text, f"{path.name} checks the protobuf runtime version"
        assert "GRPC_GENERATED_VERSION" not in text, f"{path.name} checks the grpcio version"
        if path.name.endswith("_pb2.py"):
            assert f"# Protobuf Python Version: {gencode}\n" in text, path.name
    for pyproject in (ROOT / "pyproject.toml", ROOT / "clients" / "python" / "pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        # the core declares gRPC and protobuf in its `serve` extra, the SDK as dependencies
        extras = project.get("optional-dependencies", {})
        declared = project["dependencies"] + extras.get("serve", [])
        deps = [Requirement(d) for d in declared]
        (protobuf,) = [d for d in deps if d.name == "protobuf"]
        assert protobuf.specifier == SpecifierSet(f">={gencode},<8"), pyproject


def test_environment_runs_tritonclient_next_to_the_sdk() -> None:
    """This environment holds tritonclient[grpc] at a protobuf it accepts (< 7 today), inside our
    declared range, and both import in one process in either order."""
    installed = importlib.metadata.version("protobuf")
    requirements = [Requirement(r) for r in importlib.metadata.requires("tritonclient") or []]
    wants = [
        r
        for r in requirements
        if r.name == "protobuf" and (r.marker is None or r.marker.evaluate({"extra": "grpc"}))
    ]
    assert wants and all(w.specifier.contains(installed) for w in wants), (wants, installed)
    assert SpecifierSet(f">={_generator().GENCODE_PROTOBUF},<8").contains(installed)
    pair = ("tritonclient.grpc", "mcrave_client.proto.grpc_predict_v2_pb2")
    for a, b in (pair, pair[::-1]):
        run = subprocess.run([sys.executable, "-c", f"import {a}, {b}"], capture_output=True)
        assert run.returncode == 0, run.stderr.decode()[-2000:]
