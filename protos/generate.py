"""Generate the Python gRPC code for every .proto under protos/ into the SDK package.

Two packages are compiled: `mcrave.v1` (protos/mcrave/v1) and `inference` (protos/inference, the
Open Inference Protocol). The proto package path is `mcrave/v1`, but `mcrave` is also our torch
package, so protoc's `from mcrave.v1 import x_pb2` would import from the wrong place. We generate
into a temp dir and write the modules flat into `clients/python/mcrave_client/proto/` with imports
rewritten to `mcrave_client.proto`. The `inference` modules get a descriptor pool of their own:
tritonclient and kserve register the same `inference.*` names in the default pool, and one pool
refuses a name twice ("duplicate symbol"), so ours must not go there.

protoc comes from grpcio-tools 1.62.3 (TOOLS): the last one whose Python code carries no runtime
version floor (its gencode is protobuf 4.25.1), so the SDK runs on protobuf 4.25.1 up to 7.x and
next to tritonclient (protobuf < 7). That grpcio-tools itself declares protobuf < 5 and so cannot
share an environment with tritonclient: it lives in its own folder (TOOLS_DIR), run as a separate
process. The output is committed; `tests/test_services_protos.py` proves it current.

    python protos/generate.py --install-tools  # put grpcio-tools in TOOLS_DIR (scripts/setup.sh does)
    python protos/generate.py                  # regenerate in place
    python protos/generate.py --out DIR        # generate elsewhere (the currency test does this)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGES = ("mcrave/v1", "inference")  # proto package folders under PROTO_ROOT
PRIVATE_POOL = ("inference",)  # packages whose modules must stay out of the default pool
DEFAULT_OUT = PROTO_ROOT.parent / "clients" / "python" / "mcrave_client" / "proto"
PACKAGE = "mcrave_client.proto"
TOOLS = "grpcio-tools==1.62.3"
TOOLS_DIR = PROTO_ROOT.parent / "build" / "protoc" / TOOLS.replace("==", "-")
GENCODE_PROTOBUF = "4.25.1"  # what TOOLS' protoc writes into `# Protobuf Python Version:`
_IMPORT = re.compile(r"^from (mcrave\.v1|inference) import ", re.MULTILINE)
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_INIT = '"""Generated gRPC code for protos/ (do not edit; run `python protos/generate.py`)."""\n'


def proto_files() -> list[Path]:
    """Every .proto of the packages (new files are picked up as added)."""
    return sorted(p for package in PACKAGES for p in (PROTO_ROOT / package).glob("*.proto"))


def install_tools() -> None:
    """Install TOOLS (without its protobuf < 5 pin) into TOOLS_DIR, unless it is there."""
    name, version = TOOLS.split("==")
    if (TOOLS_DIR / f"{name.replace('-', '_')}-{version}.dist-info").is_dir():
        return
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade"]
        + ["--target", str(TOOLS_DIR), TOOLS],
        check=True,
    )


def protoc(args: list[str]) -> None:
    """Run TOOLS' protoc (with its well-known types on the include path) in its own process."""
    if not (TOOLS_DIR / "grpc_tools").is_dir():
        raise RuntimeError(
            f"{TOOLS} is not in {TOOLS_DIR}: run `python protos/generate.py --install-tools`"
        )
    code = (
        "import sys; from importlib import resources; from grpc_tools import protoc; "
        "sys.exit(protoc.main(['protoc', f'-I{resources.files(\"grpc_tools\") / \"_proto\"}', "
        "*sys.argv[1:]]))"
    )
    env = {**os.environ, "PYTHONPATH": str(TOOLS_DIR)}
    if subprocess.run([sys.executable, "-c", code, *args], env=env).returncode != 0:
        raise RuntimeError("protoc failed (see its message above)")


def rewrite(package: str, name: str, source: str) -> str:
    """Flatten the imports into PACKAGE; give private-pool packages' messages a pool of their own."""
    source = _IMPORT.sub(f"from {PACKAGE} import ", source)
    if package in PRIVATE_POOL and name.endswith("_pb2.py"):
        if _DEFAULT_POOL not in source:
            raise RuntimeError(f"generated {package} code no longer adds to the default pool")
        source = source.replace(
            _DEFAULT_POOL, "_descriptor_pool.DescriptorPool().AddSerializedFile("
        )
    return source


def generate(out: Path) -> list[Path]:
    """Run protoc on all protos and write the flattened, import-rewritten modules into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        protoc(
            [
                f"-I{PROTO_ROOT}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
            ]
        )
        written = [out / "__init__.py"]
        written[0].write_text(_INIT)
        for package in PACKAGES:
            for src in sorted((Path(tmp) / package).iterdir()):
                dst = out / src.name
                dst.write_text(rewrite(package.replace("/", "."), src.name, src.read_text()))
                written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output package directory")
    parser.add_argument(
        "--install-tools", action="store_true", help=f"install {TOOLS} into {TOOLS_DIR} and exit"
    )
    args = parser.parse_args(argv)
    if args.install_tools:
        install_tools()
        return 0
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
