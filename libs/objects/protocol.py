"""The ``ObjectStore`` interface every storage backend implements.

Components depend on this protocol, never on a backend: the coordinator writes
deltas and checkpoints, the registry keeps model versions, the executor fetches
global models, and whether the bytes land in local files (standalone mode) or
in S3/MinIO (Kubernetes mode) is a line of configuration
(:func:`libs.objects.open_object_store`).  One contract suite
(``tests/contract/test_object_store.py``) runs against every backend, so they
behave the same down to the error classes.

The promises, beyond the obvious:

* **Streams, not buffers.**  ``put`` accepts an async iterable of chunks and
  ``open`` yields chunks, so a multi-gigabyte model never has to fit in memory.
* **Checksums everywhere.**  Every object carries the SHA-256 of its content,
  computed by the store while writing.  ``put`` can be given the checksum the
  sender announced (``expected_sha256``); a full read through ``open`` (offset
  0), ``read`` or ``get_file`` verifies the content against the stored value
  and raises :class:`~libs.errors.ChecksumMismatch` at the end if it differs.
* **All or nothing.**  A ``put`` that fails (checksum mismatch, too large,
  cancelled, I/O error) leaves nothing visible and an earlier object under the
  same key unchanged: data is staged out of sight and published in one atomic
  step only after it has been verified.
* **Keys are checked before any I/O** (:mod:`libs.objects.keys`); an invalid
  key is :class:`~libs.errors.InvalidKey` on every method, a key that would
  leave the store's root is :class:`~libs.errors.PathOutsideRoot`.
* Failures of the backend itself (connection refused, timeouts, 5xx) are
  :class:`~libs.errors.Unavailable`; messages never carry credentials.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias, runtime_checkable

#: What ``put`` accepts: bytes in memory, or an async stream of byte chunks.
PutData: TypeAlias = bytes | bytearray | memoryview | AsyncIterable[bytes]

#: Default size of the chunks ``open`` yields and backends write (1 MiB).
DEFAULT_CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object.

    ``sha256`` is the lowercase hex digest of the content.  It is empty only
    for an object that another tool wrote straight into an S3 bucket without
    nsfl's checksum metadata; such an object can be read but not verified.
    """

    key: str
    size: int
    sha256: str


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable-until-replaced byte objects with checksums."""

    async def put(
        self,
        key: str,
        data: PutData,
        *,
        expected_sha256: str | None = None,
        max_size: int | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing any earlier object atomically.

        Raises ChecksumMismatch if ``expected_sha256`` is given and differs,
        PayloadTooLarge as soon as more than ``max_size`` bytes arrive; in both
        cases nothing is stored and an earlier object under ``key`` is kept.
        """
        ...

    def open(
        self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, offset: int = 0
    ) -> AsyncIterator[bytes]:
        """Stream the object from byte ``offset`` in chunks of at most ``chunk_size`` bytes.

        Invalid arguments raise at once; NotFound is raised by the first
        iteration.  From offset 0 the content is verified against its stored
        checksum and ChecksumMismatch is raised after the last chunk if it
        differs.  An offset equal to the size yields nothing; beyond it is
        ValidationFailed.
        """
        ...

    async def read(self, key: str) -> bytes:
        """The whole (verified) object in memory: for small objects only."""
        ...

    async def stat(self, key: str) -> ObjectInfo:
        """Size and checksum of the object; NotFound if there is none."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the object; False if there was none."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under a non-empty ``prefix``; the number removed."""
        ...

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        expected_sha256: str | None = None,
        max_size: int | None = None,
    ) -> ObjectInfo:
        """Stream a local file into the store (same guarantees as ``put``)."""
        ...

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        """Download to ``path`` atomically: ``path`` appears only once complete and verified."""
        ...

    async def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...
