"""A local coordinator's process as its work directory tells it: alive or not, which pid, what exit code.

The :class:`~job_scheduler.local_platform.LocalPlatform` launches and signals
coordinators; this module only *reads and writes the files* by which a
scheduler, possibly a later one than the one that launched them, tells what
became of them (the layout and why it is a lock *and* a pid file are in the
:mod:`job_scheduler.local_platform` docstring):

- :func:`lock_held`: the lock is the truth about liveness;
- :class:`PidFile` and :func:`alive`: the pid to signal, guarded against pid
  reuse by the process start time; :func:`find_by_workdir` when a crash lost
  the pid file;
- :class:`ExitFile` and :func:`exit_code`: the code this scheduler reaped, else
  the one the last ``status.json`` implies;
- :func:`tail`: the end of ``coordinator.log``.

Kept apart so the platform reads as launch/adopt/signal/reap, and these
probes can be tested on files alone.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict, cast

import psutil

from libs.files import write_json_atomic
from libs.json_values import JsonObject
from libs.records import CoordinatorStatus, exit_code_of

LOCK_FILE = "coordinator.lock"
PID_FILE = "coordinator.pid"
EXIT_FILE = "coordinator.exit"
_TAIL_BLOCK = 64 * 1024


class PidFile(TypedDict, total=False):
    """``coordinator.pid``: which process runs the job's coordinator, and since when."""

    pid: int
    startTime: float | None  # psutil's create_time; guards against a reused pid
    launch: int
    launchedAt: float
    name: str


class ExitFile(TypedDict):
    """``coordinator.exit``: the code of a launch this scheduler reaped (survives a restart)."""

    launch: int
    code: int
    at: float


def pid_file(pid: int, launch: int, launched_at: float, name: str) -> PidFile:
    """The pid file of coordinator ``name``'s launch ``launch``, running as ``pid``."""
    return {
        "pid": pid,
        "startTime": start_time(pid),
        "launch": launch,
        "launchedAt": launched_at,
        "name": name,
    }


def read_pid_file(workdir: Path) -> PidFile:
    """The job's pid file; empty when there is none (or it is unreadable)."""
    return cast(PidFile, read_json(workdir / PID_FILE))  # written by pid_file only


def write_pid_file(workdir: Path, record: PidFile) -> None:
    write_json(workdir / PID_FILE, record)


def write_exit_file(workdir: Path, record: ExitFile) -> None:
    write_json(workdir / EXIT_FILE, record)


def exit_code(workdir: Path, launch: int, status: CoordinatorStatus) -> int | None:
    """Launch ``launch``'s exit code: as reaped, else as its last ``status`` implies; None for a crash."""
    recorded = read_json(workdir / EXIT_FILE)
    if recorded and recorded.get("launch") == launch and isinstance(recorded.get("code"), int):
        return int(recorded["code"])
    return exit_code_of(str(status.get("state", "")))


def lock_held(path: Path) -> bool:
    """Whether a live process holds the lock at ``path`` (probed without keeping it)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's lock, if it got one
    return False


def start_time(pid: int) -> float | None:
    """When process ``pid`` started (Unix seconds), or None if it is gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def alive(record: PidFile) -> bool:
    """Whether the pid file's process still runs (and is the same process, not a reused pid)."""
    pid, started = record.get("pid"), record.get("startTime")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - float(started)) < 0.5
    except psutil.Error:
        return False


def find_by_workdir(workdir: Path) -> int | None:
    """The pid of the process running with ``--workdir <workdir>``, for a pid file lost in a crash."""
    wanted = str(workdir)
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        for flag, value in zip(cmdline, cmdline[1:], strict=False):
            if flag == "--workdir" and value == wanted:
                return int(process.info["pid"])
    return None


def read_json(path: Path) -> JsonObject:
    """A JSON object file's content; empty when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically: a reader (or a scheduler killed mid-write) sees the old file or the new one.

    Not fsynced: these files describe live processes, which a power loss ends anyway.
    """
    write_json_atomic(path, dict(data), durable=False, indent=None)


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file, reading only as much of its end as needed."""
    if lines <= 0:
        return ""
    data = b""
    try:
        with open(path, "rb") as handle:
            position = handle.seek(0, os.SEEK_END)
            while position > 0 and data.count(b"\n") <= lines:
                step = min(_TAIL_BLOCK, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
