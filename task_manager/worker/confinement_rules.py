"""What an executor is confined to: the message the task manager sends with each launch.

The daemon builds a :class:`Confinement` from this host's config and the task's
facts (:mod:`task_manager.confinement`); the child applies it after the fork and
before any user code runs (:mod:`.confinement`).  It travels in the warm
worker's :class:`~.launch_channel.LaunchRequest` (``"confine"``) or, on the
cold path, on the worker's command line (``--confine``).

Limits are in bytes and seconds, 0 meaning "not limited"; paths are absolute.  What the host
offers (:func:`landlock_abi`, :func:`pids_cgroup_root`) is probed here too: the task manager asks
at start for its capability report, the child before it confines itself.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from pathlib import Path

from task_manager.worker.lines import Fields, decode, encode

CHANNEL = "confinement"
MIB = 1024 * 1024
SYS_LANDLOCK_CREATE_RULESET = 444
LANDLOCK_CREATE_RULESET_VERSION = 1
CGROUP_GROUP = "nsfl-executors"
NETWORK_ABI = 4  # Landlock's TCP bind/connect rules


def landlock_abi() -> int:
    """The Landlock ABI this kernel offers; 0 if none (too old, or disabled at boot).  Asked by the
    task manager for its capability report and by the child before it restricts itself."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION)
    return max(0, int(abi))


def pids_cgroup_root() -> Path | None:
    """Where this host's pids controller is mounted and writable (cgroup v1, or v2 with pids); None:
    nowhere, and the process limit is RLIMIT_NPROC's alone (per uid, and not enforced for root)."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
            if root.name == "pids" or "pids" in _read_text(root / "cgroup.subtree_control").split():
                return root / CGROUP_GROUP
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one executor (rlimits: see docs/security.md for what each one means)."""

    memory_bytes: int = 0  # RLIMIT_AS: address space, not resident memory
    cpu_seconds: int = 0  # RLIMIT_CPU: SIGXCPU at the limit
    processes: int = 0  # RLIMIT_NPROC: per uid, and not enforced for root
    open_files: int = 0  # RLIMIT_NOFILE
    file_size_bytes: int = 0  # RLIMIT_FSIZE: SIGXFSZ past it

    def to_fields(self) -> dict[str, int]:
        return {
            "memory_bytes": self.memory_bytes,
            "cpu_seconds": self.cpu_seconds,
            "processes": self.processes,
            "open_files": self.open_files,
            "file_size_bytes": self.file_size_bytes,
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> Limits:
        return cls(
            memory_bytes=fields.integer("memory_bytes"),
            cpu_seconds=fields.integer("cpu_seconds"),
            processes=fields.integer("processes"),
            open_files=fields.integer("open_files"),
            file_size_bytes=fields.integer("file_size_bytes"),
        )


@dataclass(frozen=True, slots=True)
class Confinement:
    """Limits, and (``landlock``) the only paths the executor may reach: ``read_write`` ones, and
    ``read_only`` ones (read and execute), and the TCP ports it may connect to (``tcp_connect``).
    ``no_new_privs``: no set-uid gain through an exec."""

    limits: Limits = Limits()
    no_new_privs: bool = False
    landlock: bool = False
    read_write: tuple[str, ...] = ()
    read_only: tuple[str, ...] = field(default=())
    # With Landlock ABI 4+: the only TCP ports it may connect to (its coordinator's); None: any.
    tcp_connect: tuple[int, ...] | None = None

    def to_fields(self) -> dict[str, object]:
        return {
            "limits": self.limits.to_fields(),
            "no_new_privs": self.no_new_privs,
            "landlock": self.landlock,
            "read_write": list(self.read_write),
            "read_only": list(self.read_only),
            "tcp_connect": None if self.tcp_connect is None else list(self.tcp_connect),
        }

    def to_line(self) -> bytes:
        return encode(self.to_fields())

    @classmethod
    def from_fields(cls, fields: Fields) -> Confinement:
        limits = fields.optional_object("limits")
        return cls(
            limits=Limits() if limits is None else Limits.from_fields(limits),
            no_new_privs=fields.flag("no_new_privs"),
            landlock=fields.flag("landlock"),
            read_write=fields.texts("read_write"),
            read_only=fields.texts("read_only"),
            tcp_connect=fields.optional_integers("tcp_connect"),
        )

    @classmethod
    def from_line(cls, line: bytes | str) -> Confinement:
        return cls.from_fields(decode(line, CHANNEL).named("confinement"))
