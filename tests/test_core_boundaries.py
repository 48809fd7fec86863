"""The three lines never crossed, checked statically over every source file's imports."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path, strings: bool = False) -> set[str]:
    """Modules `path` imports; with `strings`, also every string constant (a module named to
    `importlib.import_module` is imported all the same)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
    return found


def offenders(folder: str, banned: tuple[str, ...], strings: bool = False) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if "/build/" in rel:
            continue
        bad += [
            f"{rel}: {m}"
            for m in imports(path, strings)
            if any(m == b or m.startswith(b + ".") for b in banned)
        ]
    return bad


def test_core_imports_no_grpc_or_proto_code():
    assert offenders("mcrave", ("grpc", "google.protobuf", "mcrave_client")) == []


def test_core_never_imports_the_services():
    """Not even lazily: `mcrave serve` comes from the services' own entry point."""
    assert offenders("mcrave", ("services",), strings=True) == []


def test_sdk_and_bridge_never_import_torch_or_core():
    assert offenders("clients", ("torch", "mcrave", "services")) == []


@pytest.mark.parametrize(
    ("side", "other"), [("encoder", "services.decoder"), ("decoder", "services.encoder")]
)
def test_encoder_and_decoder_never_import_each_other(side, other):
    assert offenders(f"services/{side}", (other,)) == []
