"""Opening paths below a root directory without ever following a symbolic link.

The file backend turns keys into paths, and a key comes from a user.  Key
validation already rules out ``..`` and absolute keys; what remains is the
file system itself: a symlink planted inside the root (by a confused
operator, a restored backup, or an attacker with a foothold) could point
anywhere, and opening ``root/key`` naively would follow it.

Two layers, as DESIGN §9 asks for paths from users:

1. :func:`check_inside` resolves the path with ``os.path.realpath`` and
   compares it with the lexical path.  Any difference means a symlink on the
   way; it fails with :class:`~libs.errors.PathOutsideRoot`, naming the key
   (never the root or the link's target: those are server internals).
2. The actual opening walks the path one component at a time with ``openat``
   (``os.open(..., dir_fd=...)``) and ``O_NOFOLLOW``, so a symlink swapped in
   *after* the check still cannot be followed: the kernel refuses it
   (``ELOOP``/``ENOTDIR``), and :func:`open_directory`/:func:`open_file` turn
   that refusal into the same PathOutsideRoot.

The policy is deliberately blunt: any symlinked component is refused, even
one that points back inside the root.  The store never creates links, so a
link is always something it did not put there.

:func:`walk_files` lists a subtree the same way: descriptors all along,
links neither listed nor entered.

These functions block; callers run them in worker threads.  They need the
POSIX ``dir_fd`` support that Linux and macOS have.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence

from libs.errors import PathOutsideRoot
from libs.objects.keys import RESERVED_PREFIX, is_valid_key, prefix_segments

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_DIRECTORY_FLAGS = os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC

#: Objects may be model weights: readable by the service's group, nobody else.
DIRECTORY_MODE = 0o750
FILE_MODE = 0o640

# What the kernel says when O_NOFOLLOW meets a symlink: ELOOP (Linux, file),
# ENOTDIR (Linux, with O_DIRECTORY), EMLINK (FreeBSD).
_LINK_ERRNOS = {errno.ELOOP, errno.ENOTDIR, errno.EMLINK}


def supported() -> bool:
    """Whether this platform can open files relative to a directory descriptor."""
    return os.open in os.supports_dir_fd and os.mkdir in os.supports_dir_fd and bool(O_NOFOLLOW)


def _through_link(key: str) -> PathOutsideRoot:
    return PathOutsideRoot(
        f"key {key!r} goes through a symbolic link in the store; the store follows no links",
        details={"key": key},
    )


def check_inside(root: str, segments: Sequence[str], key: str) -> None:
    """PathOutsideRoot if ``root/segments`` resolves anywhere but to itself.

    ``root`` must already be a resolved path (``os.path.realpath``).
    """
    lexical = os.path.join(root, *segments)
    resolved = os.path.realpath(lexical)
    if resolved == lexical:
        return
    if os.path.commonpath([root, resolved]) != root:
        raise PathOutsideRoot(
            f"key {key!r} resolves to a path outside the store's root", details={"key": key}
        )
    raise _through_link(key)


def _raise_if_link(dir_fd: int, name: str, key: str, exc: OSError) -> None:
    if exc.errno not in _LINK_ERRNOS:
        return
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise _through_link(key) from None


def open_directory(root: str, segments: Sequence[str], *, key: str, create: bool = False) -> int:
    """A descriptor of the directory ``root/segments``, reached without following links.

    With ``create``, missing directories are made on the way.  A component
    that is a symlink raises PathOutsideRoot; one that is a file raises
    NotADirectoryError and a missing one FileNotFoundError (callers decide
    what those mean).  The caller closes the descriptor.
    """
    fd = os.open(root, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    try:
        for segment in segments:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(segment, DIRECTORY_MODE, dir_fd=fd)
            try:
                child = os.open(segment, _DIRECTORY_FLAGS, dir_fd=fd)
            except OSError as exc:
                _raise_if_link(fd, segment, key, exc)
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(dir_fd: int, name: str, flags: int, *, key: str) -> int:
    """``os.open`` of ``name`` in ``dir_fd`` with O_NOFOLLOW; a symlink raises PathOutsideRoot."""
    try:
        return os.open(name, flags | O_NOFOLLOW | O_CLOEXEC, FILE_MODE, dir_fd=dir_fd)
    except OSError as exc:
        _raise_if_link(dir_fd, name, key, exc)
        raise


def remove_empty_directories(root: str, segments: Sequence[str], *, keep: int = 0) -> None:
    """Remove ``root/segments`` and then its parents while they are empty.

    The first ``keep`` segments are never removed.  Stops quietly at the first
    directory that is not empty, is gone, or cannot be removed.
    """
    for depth in range(len(segments), keep, -1):
        try:
            parent = open_directory(root, segments[: depth - 1], key="/".join(segments))
        except (OSError, PathOutsideRoot):
            return
        try:
            os.rmdir(segments[depth - 1], dir_fd=parent)
        except OSError:
            return
        finally:
            os.close(parent)


def walk_files(root: str, prefix: str) -> Iterator[tuple[int, tuple[str, ...], list[str]]]:
    """Each directory under key ``prefix``: (its descriptor, its segments, its object file names).

    Only regular files whose key would be valid and starts with ``prefix`` are
    named; links, reserved ``.nsfl-*`` names and anything else are skipped, and
    links are never descended into.  The descriptor is open only while its
    tuple is being handled.  A prefix that itself goes through a link raises
    PathOutsideRoot; a directory that vanishes or turns into a link during the
    walk is skipped.
    """
    directory, partial = prefix_segments(prefix)
    check_inside(root, directory, prefix)
    pending: list[tuple[tuple[str, ...], str]] = [(directory, partial)]
    while pending:
        segments, start = pending.pop()
        try:
            dir_fd = open_directory(root, segments, key=prefix)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PathOutsideRoot:
            if segments == directory:
                raise
            continue
        try:
            files: list[str] = []
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(RESERVED_PREFIX) or not name.startswith(start):
                        continue
                    if not is_valid_key("/".join((*segments, name))):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(((*segments, name), ""))
                    elif entry.is_file(follow_symlinks=False):
                        files.append(name)
            yield dir_fd, segments, files
        finally:
            os.close(dir_fd)
