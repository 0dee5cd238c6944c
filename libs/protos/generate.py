"""Regenerate the Python code for ``libs/protos/*.proto``.

Usage: ``python -m libs.protos.generate [--out DIR]``.  With ``--out`` the
code is written below DIR instead of in place (the staleness test uses that).
Protos import each other as ``libs/protos/x.proto`` and the code is generated
relative to the repository root, so generated modules import each other as
``libs.protos.x_pb2`` and need no ``sys.path`` tricks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parent.parent


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # test-time tool, not a runtime dependency

    include = str(Path(protoc.__file__).resolve().parent / "_proto")
    files = [str(p.relative_to(REPO_ROOT)) for p in proto_files()]
    out_dir.mkdir(parents=True, exist_ok=True)
    # The mypy plugins are scripts beside this interpreter; name them explicitly so
    # generation works without the virtual environment on PATH.
    bin_dir = Path(sys.executable).parent
    plugins = [f"--plugin=protoc-gen-{name}={bin_dir / f'protoc-gen-{name}'}"
               for name in ("mypy", "mypy_grpc") if (bin_dir / f"protoc-gen-{name}").exists()]
    args = [
        "grpc_tools.protoc",
        *plugins,
        f"-I{REPO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO_ROOT)
    ns = parser.parse_args(argv)
    generate(ns.out)


if __name__ == "__main__":
    main(sys.argv[1:])
