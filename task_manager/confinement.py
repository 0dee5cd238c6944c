"""What an executor is given, decided by the daemon from this host's config and the task's facts.

Pure builders, no system calls: the child applies what they build
(:mod:`task_manager.worker.confinement`).  Why the daemon decides: it knows the
config (dataset roots, the TLS key, the workspace of other jobs) that the job's
code must never see, while the child only learns what it is given.

* :func:`executor_environment`: the executor's environment is an allowlist of the
  daemon's (``PATH``, locale, ``PYTHON*``, thread counts, the ``NSFL_*`` the child
  reads); anything else the daemon was started with (cloud credentials, tokens)
  stays in the daemon.  ``HOME`` and ``TMPDIR`` are set by the child to its task
  folder.
"""

from __future__ import annotations

import functools
import importlib.util
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from task_manager.settings import ExecutorLimits, Isolation, TaskEntryConfig, TaskManagerSettings
from task_manager.worker.confinement_rules import MIB, NETWORK_ABI, Confinement, Limits, landlock_abi

# Exact names kept from the daemon's environment.
ALLOWED_VARIABLES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "VIRTUAL_ENV",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "CUDA_VISIBLE_DEVICES",
        "KERAS_BACKEND",
        "TF_CPP_MIN_LOG_LEVEL",
        "NSFL_LOG_LEVEL",
        "NSFL_LOG_JSON",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    }
)
# Prefixes kept: the locale, the interpreter's own switches and what the executor reads.
ALLOWED_PREFIXES = ("LC_", "PYTHON", "NSFL_EXECUTOR_", "NSFL_NICE_")


def allowed(name: str) -> bool:
    return name in ALLOWED_VARIABLES or name.startswith(ALLOWED_PREFIXES)


def executor_environment(inherited: Mapping[str, str], given: Mapping[str, str]) -> dict[str, str]:
    """The environment of a warm worker or cold executor: the allowed part of ``inherited`` (the
    daemon's), then everything ``given`` (what the task manager sets for its executors)."""
    return {**{k: v for k, v in inherited.items() if allowed(k)}, **given}


# --- limits and paths ---------------------------------------------------------------------------

# What every Python executor reads or runs besides its own folders; a missing path is skipped by the
# child.  /etc is listed file by file: the daemon's config may live there.
SYSTEM_READ_ONLY = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/opt/conda",
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/resolv.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/os-release",
    "/etc/mime.types",
    "/etc/matplotlibrc",
    "/sys/devices/system/cpu",
    "/sys/devices/system/node",
    "/sys/fs/cgroup",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/filesystems",
    "/proc/sys/kernel",
    "/proc/sys/vm/overcommit_memory",
)
SYSTEM_READ_WRITE = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/shm")


@functools.cache
def host_landlock_abi() -> int:
    """This kernel's Landlock ABI (0: none), asked once."""
    return landlock_abi()


def executor_limits(limits: ExecutorLimits) -> Limits:
    """The configured limits as the child applies them (bytes and seconds)."""
    return Limits(
        memory_bytes=limits.memory_mb * MIB,
        cpu_seconds=limits.cpu_seconds,
        processes=limits.processes,
        open_files=limits.open_files,
        file_size_bytes=limits.file_size_mb * MIB,
    )


def python_paths() -> tuple[str, ...]:
    """The interpreter, its libraries and site-packages, and the nsfl packages an executor imports
    (each package, not the checkout: a workspace or config may live inside it)."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    paths += [p for p in sys.path if "site-packages" in p or p.endswith("dist-packages")]
    paths += _nsfl_packages()
    return tuple(dict.fromkeys(paths))


def _nsfl_packages() -> tuple[str, ...]:
    """The folders of the packages an executor imports, found without importing them (the daemon
    does not import the executor's code)."""
    folders = []
    for name in ("libs", "task_executor", "task_manager"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            folders += list(spec.submodule_search_locations)
    return tuple(folders)


def coordinator_port(endpoint: str) -> tuple[int, ...] | None:
    """The port of ``host:port`` as the one an executor may connect to; None (any) if there is none
    or this kernel's Landlock has no network rules."""
    port = endpoint.rpartition(":")[2]
    if not port.isdigit() or host_landlock_abi() < NETWORK_ABI:
        return None
    return (int(port),)


def confinement_for(
    settings: TaskManagerSettings,
    *,
    writable: Sequence[Path],
    entry: TaskEntryConfig | None,
    datasets: Sequence[str],
    coordinator: str = "",
) -> Confinement | None:
    """What an executor that writes only ``writable`` (its folders), runs ``entry`` (None: any of
    this host's entries, for a job executor) and reads ``datasets`` is confined to.  With
    ``isolation: none``, only the configured limits (None if there are none).  ``coordinator``
    (host:port): the one TCP port it may connect to, where Landlock can say so (ABI 4+)."""
    limits = executor_limits(settings.executor_limits)
    if settings.isolation == Isolation.NONE:
        return None if limits == Limits() else Confinement(limits=limits)
    entries = [entry] if entry is not None else list(settings.task_entries.values())
    readable = [*SYSTEM_READ_ONLY, *python_paths(), *(str(r) for r in settings.allowed_script_roots)]
    for each in entries:
        readable += [str(each.script), str(each.working_dir or each.script.parent)]
    readable += [str(settings.datasets[name].path) for name in datasets if name in settings.datasets]
    return Confinement(
        limits=limits,
        no_new_privs=True,
        landlock=host_landlock_abi() > 0,
        read_write=(*(str(path) for path in writable), *SYSTEM_READ_WRITE),
        read_only=tuple(dict.fromkeys(readable)),
        tcp_connect=coordinator_port(coordinator),
    )


def limit_exceeded(limits: ExecutorLimits, signal_number: int | None, output: str) -> str:
    """Which configured limit an executor that failed so ran into, if that can be told ("": none).

    The kernel says it with SIGXCPU for CPU time; Python ignores SIGXFSZ, so a file past its size
    limit is an EFBIG error ("File too large"), and memory a MemoryError (ENOMEM from an allocation),
    which the executor's result or log shows."""
    if signal_number == signal.SIGXCPU and limits.cpu_seconds:
        return f"CPU time limit {limits.cpu_seconds} s exceeded"
    if limits.file_size_mb and (signal_number == signal.SIGXFSZ or "File too large" in output):
        return f"file size limit {limits.file_size_mb} MiB exceeded"
    if limits.memory_mb and ("MemoryError" in output or "Cannot allocate memory" in output):
        return f"memory limit {limits.memory_mb} MiB exceeded"
    return ""


def host_protections(settings: TaskManagerSettings, pids_cgroup: bool) -> tuple[str, ...]:
    """What executors get on this host, as the task manager logs it and reports it to the selector
    (``pids_cgroup``: the host has a pids controller the daemon can write)."""
    given = ["environment-allowlist"]
    limits = settings.executor_limits
    if limits != ExecutorLimits():
        given.append("rlimits")
    if limits.processes:
        given.append("pids-cgroup" if pids_cgroup else "processes:rlimit-only")
    if settings.isolation == Isolation.NONE:
        return (*given, "isolation:none")
    abi = host_landlock_abi()
    given += ["no-new-privs", f"landlock-abi-{abi}" if abi else "landlock:unavailable"]
    given.append("tcp-connect:coordinator-port" if abi >= NETWORK_ABI else "network:unrestricted")
    return tuple(given)
