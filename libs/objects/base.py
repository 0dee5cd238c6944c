"""The conveniences of :class:`~libs.objects.protocol.ObjectStore`, written once for every backend.

``read``, ``exists``, ``put_file`` and ``get_file`` need nothing a backend
does not already offer through ``put``, ``open`` and ``stat``.  Writing them
here keeps the backends down to the operations that actually differ, and
means a fix (say, to how ``get_file`` stages its download) reaches both.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from pathlib import Path

from libs.errors import NotFound
from libs.objects.keys import validate_key
from libs.objects.protocol import DEFAULT_CHUNK_SIZE, ObjectInfo, PutData
from libs.objects.streaming import download_to, local_file_chunks


class ObjectStoreBase(abc.ABC):
    """Backends implement the abstract methods; the rest follows."""

    @abc.abstractmethod
    async def put(
        self,
        key: str,
        data: PutData,
        *,
        expected_sha256: str | None = None,
        max_size: int | None = None,
    ) -> ObjectInfo: ...

    @abc.abstractmethod
    def open(
        self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, offset: int = 0
    ) -> AsyncIterator[bytes]: ...

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    async def list(self, prefix: str = "") -> list[ObjectInfo]: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def delete_prefix(self, prefix: str) -> int: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def read(self, key: str) -> bytes:
        validate_key(key)
        return b"".join([chunk async for chunk in self.open(key)])

    async def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            await self.stat(key)
        except NotFound:
            return False
        return True

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        expected_sha256: str | None = None,
        max_size: int | None = None,
    ) -> ObjectInfo:
        validate_key(key)
        return await self.put(
            key, local_file_chunks(Path(path)), expected_sha256=expected_sha256, max_size=max_size
        )

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        validate_key(key)
        # open() verifies the content against the stored checksum after the
        # last chunk; download_to publishes the file only after that.
        size, sha256 = await download_to(self.open(key), Path(path))
        return ObjectInfo(key=key, size=size, sha256=sha256)
