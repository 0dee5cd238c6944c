"""The task manager's directory on disk: one folder per task, a lock, and cleanup under a quota.

Layout::

    <workspace>/.lock                     held (flock) by the one daemon using this workspace
    <workspace>/executors.json            live executor processes (see process_groups)
    <workspace>/workers/<runtime>.log     stderr of each warm worker
    <workspace>/tasks/<safe job id>/<safe task id>/
                                          task.json, executor.log, result.json, the script's files
    <workspace>/jobs/<safe job id>/state/ what a job's executors keep from round to round on this
                                          client (SCAFFOLD's control variate, local DP's upload count)

Why a lock: the orphan sweep at start kills the executors listed in
``executors.json``; a second daemon on the same workspace would kill the
first one's tasks.  ``flock`` is released by the kernel when its holder dies,
so a crashed daemon never blocks its successor.

Why task folders are grouped by job: a job's long-lived executor is confined
(Landlock, task_manager.confinement) once, when it starts, to its job's folders;
its later tasks' folders must already be beneath one of them.

Task directory names come from task ids, which hold ``/`` and ``:``; the
name keeps the readable characters and adds a short hash of the whole id,
so two ids that read alike never share a folder and no id can climb out of
``tasks/``.

A job's state folder is private to that job on this client (``task.json``
names it as ``state_dir``) and outlives its tasks: quota cleanup never
touches ``jobs/``.

Cleanup is :func:`plan_cleanup` (pure: sizes in, names out, a name being
``<job>/<task>``) plus
:meth:`Workspace.cleanup` (the disk walk and the deletes).  Finished task
folders go oldest first while ``tasks/`` is over the quota; a running
task's folder is never touched, even if that leaves the total above it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from task_manager.errors import WorkspaceInUse

log = logging.getLogger(__name__)

TASKS = "tasks"
JOBS = "jobs"
WORKERS = "workers"
PID_FILE = "executors.json"
LOCK_FILE = ".lock"
TASK_FILE = "task.json"
RESULT_FILE = "result.json"
MODEL_FILE = "model.safetensors"  # the global model when it came with the offer (TaskOffer.model)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def task_dir_name(task_id: str) -> str:
    readable = _UNSAFE.sub("_", task_id).strip("._")[:80] or "task"
    digest = hashlib.sha256(task_id.encode("utf-8")).hexdigest()[:10]
    return f"{readable}-{digest}"


@dataclass(frozen=True)
class DirUsage:
    name: str
    size: int  # bytes
    modified: float  # newest modification time inside, seconds since the epoch


def plan_cleanup(dirs: Sequence[DirUsage], quota_bytes: int, protected: Callable[[str], bool]) -> list[str]:
    """The folders to delete, oldest first, until the total fits ``quota_bytes`` (protected ones never)."""
    total = sum(d.size for d in dirs)
    doomed: list[str] = []
    for usage in sorted(dirs, key=lambda d: (d.modified, d.name)):
        if total <= quota_bytes:
            break
        if protected(usage.name):
            continue
        doomed.append(usage.name)
        total -= usage.size
    return doomed


def measure(path: Path) -> DirUsage:
    """Apparent size and newest mtime of a folder, symlinks not followed."""
    size = 0
    newest = path.lstat().st_mtime
    for folder, dirnames, filenames in os.walk(path, followlinks=False):
        for name in (*dirnames, *filenames):
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(folder, name))
                size += info.st_size
                newest = max(newest, info.st_mtime)
    return DirUsage(path.name, size, newest)


def read_log_tail(path: Path, lines: int = 20, max_bytes: int = 16384) -> str:
    """The last ``lines`` lines of a log (only its last ``max_bytes`` are read); empty if there is none."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    kept = text.splitlines()
    if size > max_bytes and kept:
        kept = kept[1:]  # the first line read is probably cut
    return "\n".join(kept[-lines:])


def read_result_reason(task_dir: Path) -> str:
    """The executor's own reason from ``result.json``, if it wrote one."""
    try:
        result = json.loads((task_dir / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    reason = result.get("reason") if isinstance(result, dict) else None
    return reason if isinstance(reason, str) else ""


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tasks = root / TASKS
        self.workers = root / WORKERS
        self.pid_file = root / PID_FILE
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create the folders and take the lock; :class:`WorkspaceInUse` if another daemon has it."""
        self.tasks.mkdir(parents=True, exist_ok=True)
        self.workers.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise WorkspaceInUse(
                f"workspace {self.root} is in use by another task manager (pid {holder}); "
                "stop it or give this one another workspace"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def job_tasks(self, job_id: str) -> Path:
        """The folder of a job's task folders."""
        return self.tasks / task_dir_name(job_id)

    def task_dir(self, task_id: str, job_id: str) -> Path:
        return self.job_tasks(job_id) / task_dir_name(task_id)

    def find_task_dir(self, task_id: str) -> Path | None:
        """The folder of ``task_id``, whichever job's it is (None: there is none)."""
        return next(iter(self.tasks.glob(f"*/{task_dir_name(task_id)}")), None)

    def create_task_dir(self, task_id: str, job_id: str) -> Path:
        """A fresh, empty folder for the task (a leftover of an earlier daemon with the same id is replaced)."""
        path = self.task_dir(task_id, job_id)
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.mkdir(mode=0o700)
        return path

    def job_state_dir(self, job_id: str) -> Path:
        """The job's state folder on this client, created (owner-only) if missing."""
        path = self.root / JOBS / task_dir_name(job_id) / "state"  # task_dir_name: any id to a safe name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def worker_log(self, runtime: str) -> Path:
        return self.workers / f"{runtime}.log"

    def cleanup(self, quota_bytes: int, protected: Callable[[str], bool]) -> list[str]:
        """Delete finished task folders, oldest first, while ``tasks/`` is over quota; the names deleted.

        Runs in a thread (the walk can be long); ``protected`` is asked again right before each delete,
        so a task accepted meanwhile keeps its folder.
        """
        usages = []
        for path in self._task_folders():
            with contextlib.suppress(FileNotFoundError):
                usage = measure(path)
                usages.append(DirUsage(f"{path.parent.name}/{path.name}", usage.size, usage.modified))
        deleted = []
        for name in plan_cleanup(usages, quota_bytes, protected):
            if protected(name):
                continue
            shutil.rmtree(self.tasks / name, ignore_errors=True)
            with contextlib.suppress(OSError):  # its job's last one: the job's folder goes too
                (self.tasks / name).parent.rmdir()
            deleted.append(name)
        if deleted:
            log.info("workspace over its quota: deleted %d finished task folder(s)", len(deleted))
        return deleted

    def _task_folders(self) -> list[Path]:
        folders = []
        with contextlib.suppress(FileNotFoundError):
            for job in self.tasks.iterdir():
                if job.is_dir() and not job.is_symlink():
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                        folders += [p for p in job.iterdir() if p.is_dir() and not p.is_symlink()]
        return folders
