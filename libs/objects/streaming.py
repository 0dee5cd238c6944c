"""Moving bytes through the event loop without holding them, and checking them on the way.

Both backends write an object the same way: take chunks from the caller
(bytes in memory or an async stream), hash them, and hand them to a blocking
sink (a temporary file) in a worker thread, enforcing ``max_size`` before a
byte too many is written.  Reading is the mirror image: chunks come out of a
blocking source in a worker thread and are hashed on the way so that a full
read can be verified against the stored checksum.

Why worker threads for every chunk instead of one thread per object: the
caller's stream is asynchronous (a gRPC upload, an HTTP body), so the loop
must stay free between chunks; ``hashlib`` and file writes release the GIL,
so the hashing and the I/O of a chunk overlap with the rest of the program.
Tiny chunks are coalesced up to ``chunk_size`` first, so a stream of many
small pieces does not pay one thread hop each.

Memory stays bounded by about two chunks whatever the object size.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any

from libs.errors import ChecksumMismatch, NotFound, PayloadTooLarge, ValidationFailed
from libs.objects.protocol import DEFAULT_CHUNK_SIZE, PutData

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_BYTES_LIKE = (bytes, bytearray, memoryview)

# What a chunk is handed to (a file's write); its result is ignored.
Sink = Callable[[bytes | bytearray | memoryview], object]


def normalize_sha256(value: str | None) -> str | None:
    """Lowercase a hex SHA-256 given by a caller; ValidationFailed if it is not one."""
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise ValidationFailed("expected_sha256 must be 64 hexadecimal characters (a SHA-256 digest)")
    return value.lower()


def check_max_size(max_size: int | None) -> None:
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0):
        raise ValidationFailed(f"max_size must be a non-negative integer or None, got {max_size!r}")


def check_read_arguments(chunk_size: int, offset: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValidationFailed(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValidationFailed(f"offset must be a non-negative integer, got {offset!r}")


def check_put_data(data: Any) -> None:
    """Reject what ``put`` cannot take before a temporary file is created."""
    if not isinstance(data, _BYTES_LIKE) and not hasattr(data, "__aiter__"):
        raise ValidationFailed(
            f"put takes bytes, bytearray, memoryview or an async iterable of bytes, not {type(data).__name__}"
        )


def _too_large(max_size: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the object is larger than the limit of {max_size} bytes", details={"limit": max_size}
    )


async def pump(
    data: PutData, sink: Sink, *, max_size: int | None, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[int, str]:
    """Feed ``data`` to ``sink`` chunk by chunk in worker threads; return (size, sha256 hex).

    PayloadTooLarge is raised before the first byte beyond ``max_size`` reaches
    the sink; an async iterator taken from ``data`` is closed in every case.
    """
    digest = hashlib.sha256()

    def feed(piece: bytes | bytearray | memoryview) -> None:
        digest.update(piece)
        sink(piece)

    if isinstance(data, _BYTES_LIKE):
        view = memoryview(data).cast("B")
        if max_size is not None and view.nbytes > max_size:
            raise _too_large(max_size)
        for start in range(0, view.nbytes, chunk_size):
            await asyncio.to_thread(feed, view[start : start + chunk_size])
        return view.nbytes, digest.hexdigest()

    size = 0
    buffer = bytearray()
    iterator = aiter(data)
    try:
        async for chunk in iterator:
            if not isinstance(chunk, _BYTES_LIKE):
                raise ValidationFailed(f"a put stream must yield bytes, not {type(chunk).__name__}")
            length = memoryview(chunk).nbytes
            if max_size is not None and size + length > max_size:
                raise _too_large(max_size)
            size += length
            if not buffer and length >= chunk_size:
                await asyncio.to_thread(feed, chunk)
                continue
            buffer += chunk
            if len(buffer) >= chunk_size:
                full, buffer = buffer, bytearray()
                await asyncio.to_thread(feed, full)
        if buffer:
            await asyncio.to_thread(feed, buffer)
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
    return size, digest.hexdigest()


class Verifier:
    """Hashes what a full read yields and compares it with the stored checksum at the end."""

    def __init__(self, key: str, expected: str | None) -> None:
        self._key = key
        self._expected = expected or None
        self._digest = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        """Called in the worker thread that read ``chunk``."""
        self._digest.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def finish(self) -> None:
        if self._expected is not None and self.sha256 != self._expected:
            raise ChecksumMismatch(
                f"object {self._key!r} does not match its stored sha256: "
                "the stored copy is corrupt or was changed outside nsfl",
                details={"key": self._key},
            )


async def local_file_chunks(path: Path, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
    """Read a local file in chunks in worker threads (for ``put_file``)."""
    try:
        handle = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        raise NotFound(f"local file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValidationFailed(f"local path {str(path)!r} is a directory, not a file") from None
    try:
        while chunk := await asyncio.to_thread(handle.read, chunk_size):
            yield chunk
    finally:
        handle.close()


def temporary_name(stem: str = "") -> str:
    """A hidden name for staging a file next to its destination."""
    return f".{stem[:100]}.nsfl-tmp-{secrets.token_hex(8)}" if stem else f".nsfl-tmp-{secrets.token_hex(8)}"


async def download_to(chunks: AsyncIterable[bytes], path: Path, *, fsync: bool = True) -> tuple[int, str]:
    """Write ``chunks`` to ``path`` atomically: a hidden temporary file beside it, then a rename.

    If the stream fails (including a ChecksumMismatch raised by the store at
    its end) the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    staging = path.with_name(temporary_name(path.name))
    try:
        handle = await asyncio.to_thread(open, staging, "xb")
    except FileNotFoundError:
        raise NotFound(f"directory {str(path.parent)!r} does not exist") from None
    digest = hashlib.sha256()
    size = 0

    def write(chunk: bytes) -> None:
        digest.update(chunk)
        handle.write(chunk)

    def publish() -> None:
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
        handle.close()
        os.replace(staging, path)

    try:
        async for chunk in chunks:
            await asyncio.to_thread(write, chunk)
            size += len(chunk)
        await asyncio.to_thread(publish)
    except BaseException:
        # close() waits for a write still running in a worker (the buffered
        # file's own lock), so the temporary file is never reopened under us.
        handle.close()
        staging.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()
