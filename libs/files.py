"""Writing files so a reader never sees half of one: write beside, fsync, rename over.

One home for the atomic writes components need (port files, status files,
certificates and keys).  ``mode`` applies from creation, so a private key
is never readable by others, not even for an instant.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one step; the file has ``mode`` from its first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it at creation
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json_atomic(path: Path, value: Any, *, mode: int = 0o644) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True).encode("utf-8") + b"\n", mode=mode)
