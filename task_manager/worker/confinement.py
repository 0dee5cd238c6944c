"""Applying a :class:`~.confinement_rules.Confinement` in an executor, after the fork and before its body.

Thin adapters over the kernel, in the order :func:`confine` runs them:

1. rlimits (:func:`apply_limits`): memory (address space), CPU seconds, processes, open files,
   file size; processes also as a pids cgroup of its own where the host has a writable pids
   controller (:func:`join_pids_cgroup`): RLIMIT_NPROC counts per uid and root is exempt from it;
2. the TLS files the executor needs are read into memory (:func:`hold_tls_files`): each
   ``NSFL_EXECUTOR_TLS_*`` file is copied into a memfd and the variable points at
   ``/proc/self/fd/<n>``, so the executor still talks mutual TLS once the key file itself is out
   of its reach (the key stays in its memory: docs/security.md);
3. ``PR_SET_NO_NEW_PRIVS``: nothing it executes gains privileges (set-uid, file capabilities);
4. Landlock (:func:`restrict_paths`): from here on the process and whatever it starts reach only
   the paths the task manager listed, plus its own ``/proc/<pid>``, and (ABI 4+) connect over TCP
   only to the listed ports: its coordinator's (a port, on any address: Landlock has no address
   rules; UDP is not covered).

Landlock needs no privilege, no exec and no namespace, so a warm fork keeps its imports.  What
the host cannot do is reported by :func:`landlock_abi` (0: none), which the task manager asks at
start; a child told to use Landlock where there is none fails to start rather than run unconfined.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
from collections.abc import MutableMapping
from pathlib import Path

from task_manager.worker.confinement_rules import (
    NETWORK_ABI,
    SYS_LANDLOCK_CREATE_RULESET,
    Confinement,
    Limits,
    landlock_abi,
    pids_cgroup_root,
)

SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2
CONNECT_TCP = 1 << 1  # LANDLOCK_ACCESS_NET_CONNECT_TCP
PR_SET_NO_NEW_PRIVS = 38
CPU_GRACE_SECONDS = 2  # SIGXCPU at the soft limit, SIGKILL this much later
TLS_VARIABLES = (
    "NSFL_EXECUTOR_TLS_CA",
    "NSFL_EXECUTOR_TLS_CERT",
    "NSFL_EXECUTOR_TLS_KEY",
    "NSFL_EXECUTOR_TLS_CRL",
)

# Filesystem rights (linux/landlock.h) and the ABI that introduced each.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
DIRECTORY_ONLY = sum(
    1 << bit for bit in range(4, 13)
)  # remove, make (char, dir, reg, sock, fifo, block, sym)
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
READ_ONLY = EXECUTE | READ_FILE | READ_DIR


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def handled_rights(abi: int) -> int:
    """Every filesystem right the ABI knows: all are denied except where a rule allows them."""
    rights = READ_ONLY | WRITE_FILE | DIRECTORY_ONLY
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]


class _NetPortAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def apply_limits(limits: Limits) -> None:
    """Lower this process's rlimits to ``limits`` (0: left as they are; never raised above the hard limit)."""
    wanted = (
        (resource.RLIMIT_AS, limits.memory_bytes, 0),
        (resource.RLIMIT_CPU, limits.cpu_seconds, CPU_GRACE_SECONDS),
        (resource.RLIMIT_NPROC, limits.processes, 0),
        (resource.RLIMIT_NOFILE, limits.open_files, 0),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes, 0),
    )
    for which, value, grace in wanted:
        if value <= 0:
            continue
        _, hard = resource.getrlimit(which)
        cap = hard if hard != resource.RLIM_INFINITY else value + grace
        resource.setrlimit(which, (min(value, cap), min(value + grace, cap)))


def join_pids_cgroup(processes: int) -> bool:
    """Move this process into a pids cgroup of its own capped at ``processes`` tasks (threads count);
    False where there is none.  Empty groups of executors that have ended are removed first."""
    root = pids_cgroup_root()
    if root is None:
        return False
    root.mkdir(exist_ok=True)
    for stale in root.iterdir():
        if stale.is_dir():
            with contextlib.suppress(OSError):  # busy: that executor still runs
                stale.rmdir()
    group = root / str(os.getpid())
    group.mkdir(exist_ok=True)
    (group / "pids.max").write_text(str(processes))
    (group / "cgroup.procs").write_text("0")
    return True


def leave_pids_cgroup(pid: int) -> None:
    """Remove an ended executor's group (the warm worker, when it reaps it)."""
    root = pids_cgroup_root()
    if root is not None:
        with contextlib.suppress(OSError):
            (root / str(pid)).rmdir()


def hold_tls_files(environ: MutableMapping[str, str] = os.environ) -> None:
    """Copy each TLS file the executor is pointed at into a memfd and point the variable at it."""
    for name in TLS_VARIABLES:
        path = environ.get(name)
        if not path:
            continue
        data = Path(path).read_bytes()
        fd = os.memfd_create(name.lower(), 0)  # inherited by what the executor starts, as the file was
        os.write(fd, data)
        environ[name] = f"/proc/self/fd/{fd}"


def set_no_new_privs() -> None:
    _check(_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def restrict_paths(
    read_write: tuple[str, ...],
    read_only: tuple[str, ...],
    abi: int,
    tcp_connect: tuple[int, ...] | None = None,
) -> None:
    """Landlock this process to ``read_write`` (every right) and ``read_only`` (read and execute)
    paths, and its own ``/proc/<pid>``; a listed path that does not exist is skipped.  With
    ``tcp_connect`` and ABI 4+, TCP connections only to those ports (on any address)."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    handled = handled_rights(abi)
    network = tcp_connect is not None and abi >= NETWORK_ABI
    attr = _RulesetAttr(handled, CONNECT_TCP if network else 0)
    size = ctypes.sizeof(attr) if network else ctypes.sizeof(ctypes.c_uint64)
    ruleset = _check(
        libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0),
        "landlock_create_ruleset",
    )
    try:
        rules = [(path, handled) for path in read_write]
        rules += [(path, READ_ONLY) for path in (*read_only, f"/proc/{os.getpid()}")]
        for path, rights in rules:
            _add_path_rule(libc, ruleset, path, rights)
        for port in (tcp_connect or ()) if network else ():
            rule = _NetPortAttr(CONNECT_TCP, port)
            _check(
                libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_NET_PORT, ctypes.byref(rule), 0),
                f"landlock_add_rule(tcp port {port})",
            )
        _check(libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _add_path_rule(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        if not os.path.isdir(path):
            rights &= ~(READ_DIR | DIRECTORY_ONLY | REFER)
        rule = _PathBeneathAttr(rights, fd)
        _check(
            libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0),
            f"landlock_add_rule({path})",
        )
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def confine(confinement: Confinement) -> None:
    """Apply ``confinement`` to this process (see the module docstring for the order)."""
    apply_limits(confinement.limits)
    if confinement.limits.processes:
        join_pids_cgroup(confinement.limits.processes)
    if confinement.landlock:
        hold_tls_files()
    if confinement.no_new_privs or confinement.landlock:  # Landlock requires it without CAP_SYS_ADMIN
        set_no_new_privs()
    if confinement.landlock:
        abi = landlock_abi()
        if abi < 1:
            raise OSError("this executor was to be confined with Landlock, which this kernel does not offer")
        restrict_paths(confinement.read_write, confinement.read_only, abi, confinement.tcp_connect)
