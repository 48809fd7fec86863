"""Generate the Python gRPC code for every `protos/mcrave/v1/*.proto` into the SDK package.

The proto package path is `mcrave/v1`, but `mcrave` is also our torch package, so protoc's
`from mcrave.v1 import x_pb2` would import from the wrong place. We generate into a temp dir and
write the modules flat into `clients/python/mcrave_client/proto/` with imports rewritten to
`mcrave_client.proto`. The output is committed; `tests/test_services_protos.py` proves it current.

    python protos/generate.py            # regenerate in place
    python protos/generate.py --out DIR  # generate elsewhere (the currency test does this)
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_DIR = PROTO_ROOT / "mcrave" / "v1"
DEFAULT_OUT = PROTO_ROOT.parent / "clients" / "python" / "mcrave_client" / "proto"
PACKAGE = "mcrave_client.proto"
_IMPORT = re.compile(r"^from mcrave\.v1 import ", re.MULTILINE)
_INIT = '"""Generated gRPC code for protos/mcrave/v1 (do not edit; run `python protos/generate.py`)."""\n'


def proto_files() -> list[Path]:
    """Every .proto of the v1 package (new files such as trainer.proto are picked up as added)."""
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run protoc on all protos and write the flattened, import-rewritten modules into `out`."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    out.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed (see its message above)")
        written = [out / "__init__.py"]
        written[0].write_text(_INIT)
        for src in sorted((Path(tmp) / "mcrave" / "v1").iterdir()):
            dst = out / src.name
            dst.write_text(_IMPORT.sub(f"from {PACKAGE} import ", src.read_text()))
            written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output package directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
