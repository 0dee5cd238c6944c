"""The committed gRPC code is generated from the committed .proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from libs.protos import generate


def test_generated_protocol_code_is_up_to_date(tmp_path: Path) -> None:
    # protoc runs in its own process: in-process it has crashed after torch was imported by other tests.
    result = subprocess.run([sys.executable, "-m", "libs.protos.generate", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    stale = []
    produced = sorted((tmp_path / "libs" / "protos").glob("*_pb2*.py*"))
    assert produced, "protoc produced nothing"
    for fresh in produced:
        committed = generate.PROTO_DIR / fresh.name
        if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
            stale.append(fresh.name)
    extra = {p.name for p in generate.PROTO_DIR.glob("*_pb2*.py*")} - {p.name for p in produced}
    assert stale == [] and not extra, (
        f"stale generated code {stale}, orphans {sorted(extra)}: run `python -m libs.protos.generate`"
    )


def test_every_service_of_the_design_is_declared() -> None:
    from libs.protos import coordinator_pb2, scheduler_pb2, selector_pb2

    services = {
        name
        for module in (selector_pb2, coordinator_pb2, scheduler_pb2)
        for name in module.DESCRIPTOR.services_by_name
    }
    assert services == {"ClientSelector", "Coordinator", "JobControl"}
