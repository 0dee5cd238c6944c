"""The default object store: plain files under one root directory.

Standalone mode (DESIGN §3) needs storage with nothing to install, and an
operator should be able to look at, back up and delete objects with ordinary
tools: key ``ns/models/m/1/model.safetensors`` is the file of that name under
the root.  Three things make it more than ``open(root / key)``:

* **Confinement.**  Every path is checked and then opened component by
  component without following links (:mod:`libs.objects.rooted_paths`), so
  a symlink inside the root cannot lead a read or a write outside it.
* **Atomic, verified writes.**  ``put`` streams into a hidden temporary file
  (``.nsfl-tmp-*``) in the object's own directory, hashing as it goes, and
  only when the size limit and checksum hold does it fsync the file and
  ``os.replace`` it over the key: readers see the old object or the new one,
  never a part, and a failed put leaves no trace (same directory, so the
  rename never crosses filesystems).
* **Checksums kept beside the objects** in a ``.nsfl-meta/`` tree
  (:mod:`libs.objects.checksum_sidecars`, which explains why not xattrs).

``list`` walks the tree and never shows temporary files, the meta tree,
symlinks or names that are not valid keys.  A file-backed store cannot hold
both ``a`` and ``a/b`` (one would have to be a file and a directory at once);
such a put is InvalidKey.  All file I/O runs in worker threads, chunk by
chunk, so neither the event loop nor memory feels the size of an object.

Temporary files of a writer killed mid-put stay behind as ``.nsfl-tmp-*``;
they are invisible to every method, and safe to delete when no put runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from io import BufferedReader, BufferedWriter
from pathlib import Path

from libs.errors import ChecksumMismatch, InvalidKey, NotFound, PathOutsideRoot, ValidationFailed
from libs.objects import rooted_paths
from libs.objects.base import ObjectStoreBase
from libs.objects.checksum_sidecars import (
    META_DIRECTORY,
    Sidecar,
    open_meta_directory,
    read_sidecar,
    remove_sidecar,
    write_sidecar,
)
from libs.objects.keys import key_segments, prefix_segments
from libs.objects.protocol import DEFAULT_CHUNK_SIZE, ObjectInfo, PutData
from libs.objects.rooted_paths import O_NONBLOCK, check_inside, open_directory, open_file
from libs.objects.streaming import (
    Verifier,
    check_max_size,
    check_put_data,
    check_read_arguments,
    normalize_sha256,
    pump,
    temporary_name,
)

Segments = tuple[str, ...]


def _conflict(key: str) -> InvalidKey:
    return InvalidKey(
        f"key {key!r} conflicts with an existing object: the file store cannot hold both "
        "'a' and 'a/...' (one would be a file and a directory at once)",
        details={"key": key},
    )


@dataclass
class _Staged:
    """A temporary file being written, in the directory its object will live in."""

    dir_fd: int
    name: str | None
    handle: BufferedWriter

    def discard(self) -> None:
        """Close and remove; idempotent.  close() waits for a write still running in a worker."""
        self.handle.close()
        if self.name is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.name, dir_fd=self.dir_fd)
            self.name = None
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


@dataclass
class _Opened:
    handle: BufferedReader
    size: int
    sidecar_sha256: str | None  # None when no sidecar describes this very file


class FileObjectStore(ObjectStoreBase):
    """Objects as files under ``root``; see the module docstring."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        create: bool = True,
        fsync: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if not rooted_paths.supported():
            raise ValidationFailed("the file object store needs a POSIX system (openat and O_NOFOLLOW)")
        check_read_arguments(chunk_size, 0)
        # The root itself may sit behind a symlink (/var -> /private/var): it is
        # configuration, resolved once and trusted; only what is below it is not.
        resolved = os.path.realpath(os.fspath(root))
        if create:
            os.makedirs(resolved, mode=rooted_paths.DIRECTORY_MODE, exist_ok=True)
        if not os.path.isdir(resolved):
            raise ValidationFailed(f"the object store root {resolved!r} is not a directory")
        self._root = resolved
        self._fsync = fsync
        self._chunk_size = chunk_size

    @property
    def root(self) -> Path:
        return Path(self._root)

    def __repr__(self) -> str:
        return f"FileObjectStore({self._root!r})"

    # -- writing ---------------------------------------------------------------------------------

    async def put(
        self,
        key: str,
        data: PutData,
        *,
        expected_sha256: str | None = None,
        max_size: int | None = None,
    ) -> ObjectInfo:
        segments = key_segments(key)
        expected = normalize_sha256(expected_sha256)
        check_max_size(max_size)
        check_put_data(data)
        staged = await asyncio.to_thread(self._stage, key, segments)
        handed_over = False
        try:
            size, sha256 = await pump(
                data, staged.handle.write, max_size=max_size, chunk_size=self._chunk_size
            )
            if expected is not None and sha256 != expected:
                raise ChecksumMismatch(
                    f"the content sent for key {key!r} does not match expected_sha256; nothing was stored",
                    details={"key": key, "expected": expected, "actual": sha256},
                )
            info = ObjectInfo(key=key, size=size, sha256=sha256)
            # From here the worker owns the staged file, even if we are cancelled meanwhile.
            handed_over = True
            await asyncio.to_thread(self._publish, key, segments, staged, info)
            return info
        finally:
            if not handed_over:
                staged.discard()

    def _stage(self, key: str, segments: Segments) -> _Staged:
        check_inside(self._root, segments, key)
        for _attempt in range(3):
            try:
                dir_fd = open_directory(self._root, segments[:-1], key=key, create=True)
            except NotADirectoryError:
                raise _conflict(key) from None
            name = temporary_name()
            try:
                fd = open_file(dir_fd, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, key=key)
            except FileNotFoundError:
                os.close(dir_fd)  # a concurrent delete pruned the directory: make it again
                continue
            except BaseException:
                os.close(dir_fd)
                raise
            return _Staged(dir_fd=dir_fd, name=name, handle=os.fdopen(fd, "wb"))
        raise FileNotFoundError(f"the directory of key {key!r} kept disappearing")

    def _publish(self, key: str, segments: Segments, staged: _Staged, info: ObjectInfo) -> None:
        try:
            staged.handle.flush()
            if self._fsync:
                os.fsync(staged.handle.fileno())
            sidecar = Sidecar.of(info.sha256, os.fstat(staged.handle.fileno()))
            try:
                # Sidecar first: until the rename it describes no visible file and is ignored.
                write_sidecar(self._root, segments, sidecar, key=key)
                assert staged.name is not None
                os.replace(staged.name, segments[-1], src_dir_fd=staged.dir_fd, dst_dir_fd=staged.dir_fd)
            except (IsADirectoryError, NotADirectoryError):
                raise _conflict(key) from None
            staged.name = None
            if self._fsync:
                os.fsync(staged.dir_fd)  # make the rename itself durable
        finally:
            staged.discard()

    # -- reading ---------------------------------------------------------------------------------

    def _open_in(self, dir_fd: int, meta_fd: int | None, name: str, key: str) -> _Opened:
        """Open a regular file without following links; NotFound for anything else."""
        try:
            fd = open_file(dir_fd, name, os.O_RDONLY | O_NONBLOCK, key=key)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no object under key {key!r}", details={"key": key}) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a directory, FIFO or device is not an object
            os.close(fd)
            raise NotFound(f"no object under key {key!r}", details={"key": key})
        handle = os.fdopen(fd, "rb")
        try:
            sidecar = read_sidecar(meta_fd, name)
        except BaseException:
            handle.close()
            raise
        trusted = sidecar.sha256 if sidecar is not None and sidecar.describes(info) else None
        return _Opened(handle=handle, size=info.st_size, sidecar_sha256=trusted)

    def _open(self, key: str, segments: Segments) -> _Opened:
        check_inside(self._root, segments, key)
        try:
            dir_fd = open_directory(self._root, segments[:-1], key=key)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no object under key {key!r}", details={"key": key}) from None
        meta_fd = open_meta_directory(self._root, segments[:-1])
        try:
            return self._open_in(dir_fd, meta_fd, segments[-1], key)
        finally:
            os.close(dir_fd)
            if meta_fd is not None:
                os.close(meta_fd)

    def _info(self, opened: _Opened, key: str, segments: Segments) -> ObjectInfo:
        """Size and checksum; recomputes (and repairs) the checksum if no sidecar vouches for it."""
        if opened.sidecar_sha256 is not None:
            return ObjectInfo(key=key, size=opened.size, sha256=opened.sidecar_sha256)
        digest = hashlib.sha256()
        while chunk := opened.handle.read(self._chunk_size):
            digest.update(chunk)
        sha256 = digest.hexdigest()
        with contextlib.suppress(OSError, PathOutsideRoot, InvalidKey):
            write_sidecar(self._root, segments, Sidecar.of(sha256, os.fstat(opened.handle.fileno())), key=key)
        return ObjectInfo(key=key, size=opened.size, sha256=sha256)

    def _stat(self, key: str, segments: Segments) -> ObjectInfo:
        opened = self._open(key, segments)
        with opened.handle:
            return self._info(opened, key, segments)

    async def stat(self, key: str) -> ObjectInfo:
        segments = key_segments(key)
        return await asyncio.to_thread(self._stat, key, segments)

    def open(
        self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, offset: int = 0
    ) -> AsyncIterator[bytes]:
        segments = key_segments(key)
        check_read_arguments(chunk_size, offset)
        return self._stream(key, segments, chunk_size, offset)

    async def _stream(
        self, key: str, segments: Segments, chunk_size: int, offset: int
    ) -> AsyncIterator[bytes]:
        opened = await asyncio.to_thread(self._open, key, segments)
        try:
            if offset > opened.size:
                raise ValidationFailed(
                    f"offset {offset} is beyond the end of object {key!r} ({opened.size} bytes)"
                )
            verifier = Verifier(key, opened.sidecar_sha256) if offset == 0 else None
            if offset:
                opened.handle.seek(offset)

            def read_chunk() -> bytes:
                chunk = opened.handle.read(chunk_size)
                if verifier is not None:
                    verifier.update(chunk)
                return chunk

            while chunk := await asyncio.to_thread(read_chunk):
                yield chunk
            if verifier is not None:
                verifier.finish()
        finally:
            opened.handle.close()

    # -- listing and deleting --------------------------------------------------------------------

    def _list(self, prefix: str) -> list[ObjectInfo]:
        infos: list[ObjectInfo] = []
        for dir_fd, segments, names in rooted_paths.walk_files(self._root, prefix):
            meta_fd = open_meta_directory(self._root, segments)
            try:
                for name in names:
                    key = "/".join((*segments, name))
                    try:
                        opened = self._open_in(dir_fd, meta_fd, name, key)
                    except (NotFound, PathOutsideRoot):
                        continue  # deleted or replaced while we listed
                    with opened.handle:
                        infos.append(self._info(opened, key, (*segments, name)))
            finally:
                if meta_fd is not None:
                    os.close(meta_fd)
        return sorted(infos, key=lambda info: info.key)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        prefix_segments(prefix)
        return await asyncio.to_thread(self._list, prefix)

    def _delete(self, key: str, segments: Sequence[str]) -> bool:
        check_inside(self._root, segments, key)
        try:
            dir_fd = open_directory(self._root, segments[:-1], key=key)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            info = os.stat(segments[-1], dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                return False
            os.unlink(segments[-1], dir_fd=dir_fd)
        except (FileNotFoundError, IsADirectoryError):
            return False
        finally:
            os.close(dir_fd)
        remove_sidecar(self._root, segments)
        self._prune(segments[:-1])
        return True

    def _prune(self, directory: Sequence[str]) -> None:
        """Remove directories left empty by a delete, in the object tree and the meta tree."""
        rooted_paths.remove_empty_directories(self._root, directory)
        rooted_paths.remove_empty_directories(self._root, (META_DIRECTORY, *directory), keep=1)

    async def delete(self, key: str) -> bool:
        segments = key_segments(key)
        return await asyncio.to_thread(self._delete, key, segments)

    def _delete_prefix(self, prefix: str) -> int:
        found = [
            (*segments, name)
            for _, segments, names in rooted_paths.walk_files(self._root, prefix)
            for name in names
        ]
        return sum(self._delete("/".join(segments), segments) for segments in found)

    async def delete_prefix(self, prefix: str) -> int:
        prefix_segments(prefix)
        if prefix == "":
            raise InvalidKey(
                "delete_prefix needs a non-empty prefix; it will not delete every object at once"
            )
        return await asyncio.to_thread(self._delete_prefix, prefix)

    async def close(self) -> None:
        """Nothing to release: descriptors are opened and closed per operation."""
