"""The three lines never crossed, checked statically over every source file's imports."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offenders(folder: str, banned: tuple[str, ...], allow: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel in allow or "/build/" in rel:
            continue
        bad += [
            f"{rel}: {m}"
            for m in imports(path)
            if any(m == b or m.startswith(b + ".") for b in banned)
        ]
    return bad


def test_core_imports_no_grpc_or_proto_code():
    # `mcrave serve` is the one door into the services, and it imports them lazily
    assert (
        offenders(
            "mcrave",
            ("grpc", "google.protobuf", "mcrave_client", "services"),
            allow=("mcrave/cli/serve.py",),
        )
        == []
    )


def test_sdk_and_bridge_never_import_torch_or_core():
    assert offenders("clients", ("torch", "mcrave", "services")) == []


@pytest.mark.parametrize(
    ("side", "other"), [("encoder", "services.decoder"), ("decoder", "services.encoder")]
)
def test_encoder_and_decoder_never_import_each_other(side, other):
    assert offenders(f"services/{side}", (other,)) == []
