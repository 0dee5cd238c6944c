"""Starting, finding and stopping the local processes the CLI runs in the background.

``standalone up`` must leave its services running after ``nsfl-ctl`` exits,
and a Ctrl-C in the terminal must not reach them, so each one starts in its
own session (``setsid``) with stdin from ``/dev/null`` and its output
appended to a log file (:mod:`libs.spawning`).

A pid alone is not an identity: after a reboot or a long time the number
can belong to someone else's process.  So every record keeps the process's
start time (as ``psutil`` reports it), and a process is only signalled when
both match.  :func:`stop` sends SIGTERM, waits up to a deadline for a
graceful exit, then SIGKILLs the process's whole group (its own session, so
nothing else), and reaps it if it is our child so no zombie is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from libs import spawning
from libs.spawning import appended_log, utc_stamp

START_TIME_TOLERANCE = 1.0
_POLL = 0.05


@dataclass(frozen=True)
class ProcessRecord:
    """A background process: enough to find it again and to be sure it is still the same one."""

    pid: int
    start_time: float

    def as_dict(self) -> dict[str, float | int]:
        return {"pid": self.pid, "startTime": self.start_time}


def spawn_detached(argv: Sequence[str], *, env: Mapping[str, str], log_file: Path) -> ProcessRecord:
    """Start ``argv`` in a new session, output appended to ``log_file``."""
    with appended_log(log_file, f"started at {utc_stamp()}: {' '.join(argv)}") as log_fd:
        pid = spawning.spawn_detached(argv, env, output=log_fd)
    return ProcessRecord(pid, start_time_of(pid) or time.time())


def start_time_of(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def is_alive(record: ProcessRecord) -> bool:
    """Whether the recorded process still runs (a zombie or a reused pid does not)."""
    reap(record.pid)
    try:
        process = psutil.Process(record.pid)
        if abs(process.create_time() - record.start_time) > START_TIME_TOLERANCE:
            return False
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def exit_code(record: ProcessRecord) -> int | None:
    """The exit code of our own child once it ended, if it can still be collected."""
    try:
        pid, status = os.waitpid(record.pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if pid else None


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our ended child (no-op otherwise)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(record: ProcessRecord, *, grace: float) -> str:
    """Stop the process: ``"stopped"``, ``"killed"`` (after ``grace`` seconds) or ``"not running"``."""
    if not is_alive(record):
        return "not running"
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    if _wait_gone(record, grace):
        return "stopped"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    _wait_gone(record, 5.0)
    return "killed"


def stop_all(records: Sequence[ProcessRecord], *, grace: float) -> list[str]:
    """Stop several processes at once: SIGTERM to all, then one shared grace period, then SIGKILL."""
    alive = [r for r in records if is_alive(r)]
    for record in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    outcome = {r.pid: "not running" for r in records}
    for record in alive:
        outcome[record.pid] = (
            "stopped" if _wait_gone(record, max(0.0, deadline - time.monotonic())) else "killed"
        )
    for record in alive:
        if outcome[record.pid] == "killed":
            outcome[record.pid] = stop(record, grace=0.0) if is_alive(record) else "stopped"
    return [outcome[r.pid] for r in records]


def _wait_gone(record: ProcessRecord, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while is_alive(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def processes_with_argument(flag: str, under: Path) -> list[ProcessRecord]:
    """Our user's processes whose command line has ``flag PATH`` with ``PATH`` inside ``under``.

    How ``standalone down`` finds coordinators: they run in their own
    sessions and outlive the scheduler by design, and each is started with
    ``--workdir <state>/jobs/<ns>/<name>``.
    """
    root = under.resolve()
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "create_time", "uids"]):
        info = process.info
        argv = info.get("cmdline") or []
        uids = info.get("uids")
        if uids is not None and uids.real != os.getuid():
            continue
        for index, argument in enumerate(argv[:-1]):
            if argument == flag and Path(argv[index + 1]).resolve().is_relative_to(root):
                found.append(ProcessRecord(int(info["pid"]), float(info.get("create_time") or 0.0)))
                break
    return found


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])
