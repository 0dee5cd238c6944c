"""Where the file backend keeps each object's SHA-256: a small sidecar file.

For ``root/ns/models/m/1/model.safetensors`` the sidecar is
``root/.nsfl-meta/ns/models/m/1/model.safetensors``, a few bytes of JSON.
The ``.nsfl-`` prefix is reserved in keys, so the meta tree can never collide
with an object and ``list`` skips it by name.

Why a sidecar and not an extended attribute: an xattr would travel with the
file and be renamed with it atomically, which is attractive, but user xattrs
are missing or limited on filesystems the store meets in practice (older
tmpfs, some overlay and network filesystems, and macOS has no ``os.setxattr``);
a store that works on some disks and not others is worse than a slightly more
elaborate one that works everywhere.

The price of a sidecar is that the object and its checksum cannot be
replaced in one atomic step.  The sidecar therefore records which file it
describes, by inode number, size and modification time (all unchanged by the
rename that publishes an object), and it is trusted only if they still match
the object's file.  The object file is the truth; the sidecar is a verified
cache:

* a crash between writing the sidecar and publishing the object, or two
  writers racing on one key, leave a sidecar that does not match: the
  checksum is recomputed from the file (and the sidecar repaired);
* a file copied into the root by hand has no sidecar: same;
* a sidecar left behind by a crash between deleting an object and its
  sidecar describes no file: it is ignored and overwritten by the next put.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from libs.errors import PathOutsideRoot
from libs.objects.rooted_paths import O_CLOEXEC, O_NOFOLLOW, O_NONBLOCK, open_directory, open_file
from libs.objects.streaming import temporary_name

META_DIRECTORY = ".nsfl-meta"
_MAX_SIDECAR_BYTES = 4096


@dataclass(frozen=True)
class Sidecar:
    sha256: str
    size: int
    inode: int
    mtime_ns: int

    @classmethod
    def of(cls, sha256: str, info: os.stat_result) -> Sidecar:
        return cls(sha256=sha256, size=info.st_size, inode=info.st_ino, mtime_ns=info.st_mtime_ns)

    def describes(self, info: os.stat_result) -> bool:
        """Whether this sidecar was written for the file ``info`` describes, unchanged since."""
        return (self.inode, self.size, self.mtime_ns) == (info.st_ino, info.st_size, info.st_mtime_ns)

    def encode(self) -> bytes:
        return json.dumps({"version": 1, **asdict(self)}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Sidecar | None:
        """The sidecar in ``data``, or None if it is damaged (then the checksum is recomputed)."""
        try:
            fields = json.loads(data)
            sidecar = cls(
                sha256=str(fields["sha256"]),
                size=int(fields["size"]),
                inode=int(fields["inode"]),
                mtime_ns=int(fields["mtime_ns"]),
            )
        except (ValueError, TypeError, KeyError):
            return None
        return sidecar if len(sidecar.sha256) == 64 else None


def open_meta_directory(root: str, directory: Sequence[str]) -> int | None:
    """A descriptor of the meta directory that mirrors ``directory``, or None if there is none."""
    try:
        return open_directory(root, (META_DIRECTORY, *directory), key="/".join(directory))
    except (OSError, PathOutsideRoot):
        return None


def read_sidecar(meta_fd: int | None, name: str) -> Sidecar | None:
    if meta_fd is None:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, dir_fd=meta_fd)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as handle:
        return Sidecar.decode(handle.read(_MAX_SIDECAR_BYTES))


def write_sidecar(root: str, segments: Sequence[str], sidecar: Sidecar, *, key: str) -> None:
    """Replace the sidecar of ``segments`` atomically (temporary file, then rename).

    No fsync: after a crash a lost or stale sidecar is detected and the
    checksum recomputed, so durability here would buy nothing.
    """
    for _attempt in range(3):
        meta_fd = open_directory(root, (META_DIRECTORY, *segments[:-1]), key=key, create=True)
        try:
            staging = temporary_name()
            try:
                fd = open_file(meta_fd, staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, key=key)
            except FileNotFoundError:
                continue  # a concurrent delete pruned the directory between mkdir and open
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(sidecar.encode())
                os.replace(staging, segments[-1], src_dir_fd=meta_fd, dst_dir_fd=meta_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(staging, dir_fd=meta_fd)
                raise
            return
        finally:
            os.close(meta_fd)
    raise FileNotFoundError(f"the checksum directory of key {key!r} kept disappearing")


def remove_sidecar(root: str, segments: Sequence[str]) -> None:
    meta_fd = open_meta_directory(root, segments[:-1])
    if meta_fd is None:
        return
    try:
        with contextlib.suppress(OSError):
            os.unlink(segments[-1], dir_fd=meta_fd)
    finally:
        os.close(meta_fd)
