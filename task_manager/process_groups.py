"""Executor process groups: killing them safely, and the pid file that outlives a crashed daemon.

Every executor runs as the leader of its own session and process group
(``setsid`` in the warm worker's child, ``start_new_session`` on the cold
path), so a kill by group also reaches what the user's script started
(DataLoader workers, shell commands).

Why kills go through :func:`kill_group` and never a bare ``kill(pid)``: pids
are recycled.  A process is ours only if its start time is the one recorded
when it was launched, so:

* the leader is alive (or a zombie) with the recorded start time: the group
  is ours, ``killpg`` it;
* a process with the leader's pid exists but started at another time: the
  pid was recycled, kill nothing;
* no process has the leader's pid: the kernel does not hand out a pid that
  is still some group's id, so the members left in that group (children the
  leader left behind) are ours; they are killed one by one, and only those
  started after the leader.

``executors.json`` lists the live executor groups with their start times;
it is rewritten atomically on every launch and exit.  A daemon that starts
reads what its crashed predecessor left and kills it before it launches
anything (the warm workers and their direct children already died with the
daemon through ``PR_SET_PDEATHSIG``; their grandchildren did not).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from libs.files import write_json_atomic

log = logging.getLogger(__name__)

# psutil start times of one process agree to the clock tick; a recycled pid differs by far more.
START_TOLERANCE = 0.05


@dataclass(frozen=True)
class ProcessRecord:
    """One executor's process group, as recorded in ``executors.json``."""

    task_id: str
    pid: int  # the group leader; its pgid equals its pid
    start_time: float  # psutil create_time of the leader


def start_time(pid: int) -> float | None:
    """The psutil create time of ``pid``, or None if it is gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _group_members(pgid: int, started: float) -> list[int]:
    """Live (not zombie) processes of group ``pgid`` started no earlier than ``started``."""
    members = []
    for process in psutil.process_iter():
        try:
            if (
                os.getpgid(process.pid) == pgid
                and process.create_time() >= started - START_TOLERANCE
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                members.append(process.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return members


def kill_group(record: ProcessRecord, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to the record's process group if it is still ours; how many processes were signalled."""
    leader = start_time(record.pid)
    if leader is not None:
        if abs(leader - record.start_time) > START_TOLERANCE:
            return 0  # recycled pid: not ours
        try:
            os.killpg(record.pid, sig)
            return 1
        except ProcessLookupError:
            # The leader never reached setsid (or changed group): it alone is ours.
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, sig)
                return 1
            return 0
    signalled: set[int] = set()
    for _ in range(3):  # members may be forking while we kill
        members = [pid for pid in _group_members(record.pid, record.start_time) if pid not in signalled]
        if not members:
            break
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                signalled.add(pid)
    return len(signalled)


class PidFile:
    """``executors.json``: the live executor groups of this workspace."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, ProcessRecord] = {}

    def read(self) -> list[ProcessRecord]:
        """What the file holds (a missing or damaged file holds nothing; damage is logged)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return [ProcessRecord(str(r["task_id"]), int(r["pid"]), float(r["start_time"])) for r in raw]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a damaged %s: %s", self.path, exc)
            return []

    def add(self, record: ProcessRecord) -> None:
        self._records[record.task_id] = record
        self._write()

    def remove(self, task_id: str) -> None:
        if self._records.pop(task_id, None) is not None:
            self._write()

    def discard(self, record: ProcessRecord) -> None:
        """Remove ``record`` if it is still the one listed under its id (not a later process's)."""
        if self._records.get(record.task_id) == record:
            self.remove(record.task_id)

    def clear(self) -> None:
        self._records.clear()
        self._write()

    def _write(self) -> None:
        # Not fsynced: it lists live processes, which a power loss ends anyway; it changes with every task.
        write_json_atomic(self.path, [asdict(r) for r in self._records.values()], durable=False, indent=1)


def sweep_orphans(pid_file: PidFile) -> int:
    """Kill the executor groups a previous daemon left in ``pid_file``, then clear it; processes killed."""
    killed = 0
    for record in pid_file.read():
        count = kill_group(record)
        if count:
            log.warning(
                "killed %d leftover process(es) of task %s from a previous task manager",
                count,
                record.task_id,
            )
        killed += count
    pid_file.clear()
    return killed
