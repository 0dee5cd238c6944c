"""Writing files so a reader never sees half of one: write beside, fsync, rename over.

One home for the atomic writes components need (port files, status and pid
files, records, certificates and keys).  ``mode`` applies from creation, so
a private key is never readable by others, not even for an instant.

``durable=False`` skips the ``fsync``: the rename is still atomic, so a
reader (or a process killed mid-write) sees the old file or the new one, but
after a power loss the file may hold either.  That is the right trade for
files rewritten on a hot path whose content a crash of the machine makes
moot anyway (a coordinator's ``status.json`` between state changes, pid
files of processes a reboot has ended, a task's result): an ``fsync`` costs
milliseconds on a real disk, paid on every round.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` in one step; the file has ``mode`` from its first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it at creation
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644, durable: bool = True) -> None:
    """:func:`write_atomic` for text, UTF-8 encoded."""
    write_atomic(path, text.encode("utf-8"), mode=mode, durable=durable)


def write_json_atomic(
    path: Path, value: Any, *, mode: int = 0o644, durable: bool = True, indent: int | None = 2
) -> None:
    """``value`` as JSON (keys sorted, one trailing newline); ``indent=None`` writes it on one line."""
    text = json.dumps(value, indent=indent, sort_keys=True) + "\n"
    write_text_atomic(path, text, mode=mode, durable=durable)
