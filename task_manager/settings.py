"""Settings of the task manager: one frozen dataclass, read from the data owner's ``client.yaml``.

:func:`load` builds :class:`TaskManagerSettings` from the defaults, the YAML
or JSON file, then ``NSFL_TM_*`` variables (``NSFL_TM_MAX_PARALLEL_TASKS=2``),
strictly: an unknown key anywhere, including inside a dataset or a task
entry, is an error naming the key, because a typo on a data owner's host
must not silently fall back to a default.

Relative paths in the file (workspace, dataset paths, scripts, script roots,
TLS files) are taken from the config file's directory, not from the
daemon's working directory, so a systemd unit and a shell started elsewhere
read the same file the same way.

Why the script roots: a task offer names a task entry, never a path, and each
entry's script must resolve (symlinks followed) inside one of
``allowed_script_roots``.  A config that points an entry outside them is
refused at start, naming the entry, rather than at the first offer.  The
mappings (``datasets``, ``task_entries``, ``preload``, ``labels``,
``resources``) cannot come from variables; everything else can.

The wire (``tls_*``, ``trust_domain``, ``insecure``) comes from
:class:`~libs.wire.WireSettings`: the task manager and its executors dial
the selector and coordinators with this host's client certificate, whose
identity must be ``client/<client_id>`` (checked at start with
:meth:`TaskManagerSettings.check_certificate`, since the selector would
refuse the stream anyway, with a less helpful error).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.errors import InvalidSetting, NsflError, PathOutsideRoot
from libs.pki.identity import IdentityKind
from libs.settings import load_settings
from libs.wire import WireSettings
from task_manager.worker.launch_channel import MAX_NICE

PREFIX = "NSFL_TM_"
RUNTIMES = ("pytorch", "tensorflow")
MODES = ("script", "function")
DEFAULT_EXECUTOR_ENTRY = "task_executor.runner:run_task"
DEFAULT_WARM_UP_ENTRY = "task_executor.runtimes:warm_up"
DEFAULT_PRELOAD: Mapping[str, tuple[str, ...]] = {"pytorch": ("torch",), "tensorflow": ("tensorflow",)}
MAX_PARALLEL_TASKS = 1024

CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# The job schema's taskEntryName and datasetName patterns, so every name a job can ask for can be configured.
ENTRY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,252}")
DATASET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")
EXECUTOR_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class DatasetConfig:
    """One local dataset, advertised to the selector by name, sample count and tags."""

    path: Path
    samples: int = 0
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskEntryConfig:
    """A task installed on this host: what a job's ``taskEntry`` name runs."""

    script: Path
    runtime: str
    mode: str = "script"
    working_dir: Path | None = None  # None: the script's folder


class Isolation(enum.StrEnum):
    """How executors are confined (task_manager.confinement): ``strict``, the strictest this host
    supports (Landlock where the kernel has it, rlimits, no new privileges, an environment
    allowlist); ``none``, unconfined but for the environment allowlist and the limits."""

    STRICT = "strict"
    NONE = "none"


@dataclass(frozen=True)
class ExecutorLimits:
    """What each executor may use (0: not limited); see docs/security.md for what each rlimit means."""

    memory_mb: int = 0  # address space (RLIMIT_AS), not resident memory
    cpu_seconds: int = 0  # CPU time over the executor's whole life (a job executor's: all its rounds)
    processes: int = 0  # RLIMIT_NPROC: counted per uid, and not enforced when the daemon runs as root
    open_files: int = 0
    file_size_mb: int = 0  # the largest file it may write


@dataclass(frozen=True)
class ResourceLimits:
    """What this host offers the federation; advertised at registration (0: not declared)."""

    cpus: float = 0.0
    memory_mb: int = 0
    gpus: int = 0
    disk_mb: int = 0


def _nested(cls: type[Any], where: str, raw: object) -> Any:
    """Build one nested dataclass strictly, with errors that say where it sits in the file."""
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, Mapping) or not all(isinstance(key, str) for key in raw):
        raise InvalidSetting(f"setting {where!r} must be a mapping of names to values")
    try:
        return load_settings(cls, prefix="\0", env={}, overrides=raw)
    except NsflError as exc:
        raise type(exc)(f"{where}: {exc.message}", details={"key": where}) from None


def _string_tuple(where: str, raw: object) -> tuple[str, ...]:
    if isinstance(raw, str) or not isinstance(raw, (list, tuple)) or not all(isinstance(x, str) for x in raw):
        raise InvalidSetting(f"setting {where!r} must be a list of strings")
    return tuple(raw)


@dataclass(frozen=True)
class TaskManagerSettings(WireSettings):
    """Everything the daemon needs, validated at start (see the module docstring)."""

    client_id: str = ""
    selector_address: str = "127.0.0.1:50051"
    workspace: Path = Path("~/.nsfl/task-manager").expanduser()
    datasets: Mapping[str, DatasetConfig] = field(default_factory=dict)
    task_entries: Mapping[str, TaskEntryConfig] = field(default_factory=dict)
    allowed_script_roots: tuple[Path, ...] = ()
    # Empty: the runtimes of the task entries.
    runtimes: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    resources: ResourceLimits = ResourceLimits()
    max_parallel_tasks: int = 1
    # The cap on any task's run time; an offer may ask for less, never more.
    task_timeout_seconds: float = 3600.0
    # Finished task directories are deleted, oldest first, while tasks/ holds more than this.
    workspace_quota_mb: int = 10240
    reconnect_initial_seconds: float = 0.2
    reconnect_max_seconds: float = 5.0
    # "module:function" called with the task directory in each executor process.
    executor_entry: str = DEFAULT_EXECUTOR_ENTRY
    # Fork executors from a worker per runtime that has already imported the framework.
    warm_runtimes: bool = True
    # "module:function" each warm worker calls with its runtime after its preloads, to import what
    # tasks would otherwise import on first use ("": none).
    warm_up_entry: str = DEFAULT_WARM_UP_ENTRY
    # Modules each runtime's warm worker imports before forking; given runtimes replace the defaults.
    preload: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_PRELOAD))
    # Keep one executor process per job alive across its rounds (forked from the warm worker), so a
    # round pays neither a fork nor the user's imports and data loading again (task_manager.job_executors).
    long_lived_executors: bool = True
    # A job executor that got no task for this long is stopped (a job that ended without saying so).
    job_executor_idle_seconds: float = 600.0
    # At most this many job executors at once; starting one more stops the longest idle.
    max_job_executors: int = 8
    # Threads each executor's framework may use (torch intra-op, OpenMP, BLAS); 0: the host's cpus
    # (resources.cpus, else all) shared among max_parallel_tasks, at least 1.
    executor_threads: int = 0
    # How far below the task manager's the executors' CPU priority is (a nice increment, 0-19; 0:
    # the same).  User code that takes every core must not starve the daemon beside it, nor the
    # executor that is being handed its next task (task_manager.worker.child.lower_priority).
    executor_nice: int = 10
    # "strict" (the default: the strictest this host supports) or "none" (see Isolation); running
    # unconfined must be asked for explicitly.
    isolation: str = Isolation.STRICT
    executor_limits: ExecutorLimits = ExecutorLimits()
    log_level: str = "INFO"
    log_json: bool = False

    def __post_init__(self) -> None:
        # libs.settings hands mappings over raw; type their values here so the object is typed once built.
        datasets = {str(n): _nested(DatasetConfig, f"datasets.{n}", d) for n, d in self.datasets.items()}
        entries = {
            str(n): _nested(TaskEntryConfig, f"task_entries.{n}", e) for n, e in self.task_entries.items()
        }
        preload = dict(DEFAULT_PRELOAD)
        preload.update({str(r): _string_tuple(f"preload.{r}", m) for r, m in self.preload.items()})
        labels = {str(k): str(v) for k, v in self.labels.items()}
        object.__setattr__(
            self, "executor_limits", _nested(ExecutorLimits, "executor_limits", self.executor_limits)
        )
        object.__setattr__(self, "datasets", datasets)
        object.__setattr__(self, "task_entries", entries)
        object.__setattr__(self, "preload", preload)
        object.__setattr__(self, "labels", labels)

    @property
    def served_runtimes(self) -> tuple[str, ...]:
        return self.runtimes or tuple(sorted({e.runtime for e in self.task_entries.values()}))

    @property
    def workspace_quota_bytes(self) -> int:
        return self.workspace_quota_mb * 1024 * 1024

    @property
    def threads_per_executor(self) -> int:
        """Why share: on a small host, several executors each running a full-width thread pool spend
        their time contending (2 cores, 3 executors x 2 torch threads train ~10x slower than 1 each)."""
        if self.executor_threads:
            return self.executor_threads
        cpus = self.resources.cpus or float(os.cpu_count() or 1)
        return max(1, int(cpus // self.max_parallel_tasks))

    def validate(self) -> None:
        """Checks on values alone; :meth:`check_paths` does the file-system ones once paths are absolute."""
        if not CLIENT_ID.fullmatch(self.client_id):
            raise InvalidSetting(
                f"setting 'client_id' is required and must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,62}}$, "
                f"got {self.client_id!r}"
            )
        host, sep, port = self.selector_address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise InvalidSetting(
                f"setting 'selector_address' must be host:port, got {self.selector_address!r}"
            )
        if not self.task_entries:
            raise InvalidSetting("setting 'task_entries' is required: name at least one task this host runs")
        self._validate_numbers()
        self._validate_names()
        for name, entry in self.task_entries.items():
            if entry.mode not in MODES:
                raise InvalidSetting(
                    f"task entry {name!r}: mode must be one of {', '.join(MODES)}, got {entry.mode!r}"
                )
            if entry.runtime not in self.served_runtimes:
                raise InvalidSetting(
                    f"task entry {name!r} runs {entry.runtime!r}, which is not in 'runtimes' "
                    f"({', '.join(self.served_runtimes)})"
                )
        for runtime in (*self.served_runtimes, *self.preload):
            if runtime not in RUNTIMES:
                raise InvalidSetting(f"unknown runtime {runtime!r}: known runtimes are {', '.join(RUNTIMES)}")
        for runtime, modules in self.preload.items():
            for module in modules:
                if not MODULE_NAME.fullmatch(module):
                    raise InvalidSetting(f"setting 'preload.{runtime}': {module!r} is not a module name")
        if not EXECUTOR_ENTRY.fullmatch(self.executor_entry):
            raise InvalidSetting(
                f"setting 'executor_entry' must read 'package.module:function', got {self.executor_entry!r}"
            )
        if self.warm_up_entry and not EXECUTOR_ENTRY.fullmatch(self.warm_up_entry):
            raise InvalidSetting(
                f"setting 'warm_up_entry' must read 'package.module:function' or be empty, got {self.warm_up_entry!r}"
            )
        self.validate_wire([self.selector_address])

    def _validate_numbers(self) -> None:
        for name in (
            "task_timeout_seconds",
            "reconnect_initial_seconds",
            "reconnect_max_seconds",
            "job_executor_idle_seconds",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise InvalidSetting(f"setting {name!r} must be a positive number of seconds, got {value!r}")
        if self.reconnect_initial_seconds > self.reconnect_max_seconds:
            raise InvalidSetting(
                "setting 'reconnect_initial_seconds' must not exceed 'reconnect_max_seconds'"
            )
        if not 1 <= self.max_parallel_tasks <= MAX_PARALLEL_TASKS:
            raise InvalidSetting(
                f"setting 'max_parallel_tasks' must be within 1-{MAX_PARALLEL_TASKS}, got {self.max_parallel_tasks}"
            )
        if self.max_job_executors < 1:
            raise InvalidSetting(
                f"setting 'max_job_executors' must be at least 1, got {self.max_job_executors}"
            )
        if self.executor_threads < 0:
            raise InvalidSetting(
                f"setting 'executor_threads' must not be negative, got {self.executor_threads}"
            )
        if not 0 <= self.executor_nice <= MAX_NICE:
            raise InvalidSetting(
                f"setting 'executor_nice' must be within 0-{MAX_NICE} (0: the task manager's own priority), "
                f"got {self.executor_nice}"
            )
        if self.workspace_quota_mb < 1:
            raise InvalidSetting(
                f"setting 'workspace_quota_mb' must be positive, got {self.workspace_quota_mb}"
            )
        if self.isolation not in tuple(Isolation):
            raise InvalidSetting(
                f"setting 'isolation' must be one of {', '.join(Isolation)}, got {self.isolation!r}"
            )
        if min(dataclasses.astuple(self.executor_limits)) < 0:
            raise InvalidSetting("setting 'executor_limits' must hold non-negative numbers (0: not limited)")
        r = self.resources
        if not math.isfinite(r.cpus) or min(r.cpus, r.memory_mb, r.gpus, r.disk_mb) < 0:
            raise InvalidSetting("setting 'resources' must hold non-negative numbers")
        for name, dataset in self.datasets.items():
            if dataset.samples < 0:
                raise InvalidSetting(f"dataset {name!r}: samples must not be negative")

    def _validate_names(self) -> None:
        for name in self.task_entries:
            if not ENTRY_NAME.fullmatch(name):
                raise InvalidSetting(f"task entry name {name!r} must be letters, digits, '-', '_' or '.'")
        for name in self.datasets:
            if not DATASET_NAME.fullmatch(name):
                raise InvalidSetting(f"dataset name {name!r} must be letters, digits, '-', '_' or '.'")
        for key, value in self.labels.items():
            if not key or len(key) > 128 or len(value) > 128:
                raise InvalidSetting(f"label {key[:40]!r}: keys and values must be 1-128 characters")

    def check_certificate(self) -> None:
        """The certificate must be this host's: ``client/<client_id>`` (nothing to check without TLS)."""
        tls = self.tls
        if tls is None:
            return
        identity = tls.identity()
        if identity.kind is not IdentityKind.CLIENT:
            raise InvalidSetting(
                f"setting 'tls_cert' ({tls.cert}) identifies {identity.uri}, which is not a client; "
                f"give this host a client certificate for {self.client_id!r} (`nsfl-ctl pki enroll`)"
            )
        if identity.client_id != self.client_id:
            raise InvalidSetting(
                f"setting 'tls_cert' ({tls.cert}) identifies client {identity.client_id!r}, "
                f"but 'client_id' is {self.client_id!r}: set 'client_id: {identity.client_id}', "
                f"or enroll this host as {self.client_id!r} (`nsfl-ctl pki enroll`) and point 'tls_cert' "
                "and 'tls_key' at its files"
            )

    def check_paths(self) -> None:
        """Every task entry's script must be a file inside an allowed root (paths absolute by now);
        the certificate must be this client's."""
        self.check_certificate()
        roots = [root.resolve() for root in self.allowed_script_roots]
        for name, entry in self.task_entries.items():
            script = entry.script.resolve()
            if not any(script.is_relative_to(root) for root in roots):
                where = ", ".join(str(r) for r in roots) or "none are configured"
                raise PathOutsideRoot(
                    f"task entry {name!r}: script {script} is outside the allowed_script_roots ({where})",
                    details={"key": f"task_entries.{name}.script"},
                )
            if not script.is_file():
                raise InvalidSetting(f"task entry {name!r}: script {script} is not a file")
            working_dir = entry.working_dir or script.parent
            if not working_dir.is_dir():
                raise InvalidSetting(f"task entry {name!r}: working_dir {working_dir} is not a directory")

    def with_paths_from(self, base: Path) -> TaskManagerSettings:
        """A copy with every relative path taken from ``base`` (the config file's directory)."""

        def absolute(path: Path) -> Path:
            return path if path.is_absolute() else base / path

        def maybe(path: Path | None) -> Path | None:
            return None if path is None else absolute(path)

        return dataclasses.replace(
            self,
            workspace=absolute(self.workspace),
            allowed_script_roots=tuple(absolute(r) for r in self.allowed_script_roots),
            datasets={n: dataclasses.replace(d, path=absolute(d.path)) for n, d in self.datasets.items()},
            task_entries={
                n: dataclasses.replace(e, script=absolute(e.script), working_dir=maybe(e.working_dir))
                for n, e in self.task_entries.items()
            },
            tls_ca=maybe(self.tls_ca),
            tls_cert=maybe(self.tls_cert),
            tls_key=maybe(self.tls_key),
            tls_crl=maybe(self.tls_crl),
        )


def load(
    file: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TaskManagerSettings:
    """Load, resolve relative paths against the config file's directory (else the cwd), and check."""
    settings = load_settings(TaskManagerSettings, prefix=PREFIX, file=file, env=env, overrides=overrides)
    base = Path(file).resolve().parent if file is not None else Path.cwd()
    settings = settings.with_paths_from(base)
    settings.check_paths()
    return settings
