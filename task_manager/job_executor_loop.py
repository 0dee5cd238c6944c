"""Inside a job executor: the loop that runs one job's tasks, round after round, in one process.

A job executor is forked by the warm worker like a one-task executor (its
own session and process group, ``PR_SET_PDEATHSIG``, the framework already
imported), but instead of running one task and exiting it connects back to
its task manager over a local Unix socket and serves the job's tasks in turn
until it is told to stop.  What a round no longer pays: the fork, the
interpreter's warm-up of the executor's own modules, a new gRPC channel to the
coordinator (the executor keeps it), the user's imports and whatever the user
code keeps in ``nsfl.cache`` (parsed data sets).

The channel (newline-delimited JSON, one object per line; docs/contracts.md)::

    executor -> manager   {"hello": <token>, "pid": <pid>}        once, first
    manager -> executor   {"run": "<task dir>"}                   one task
    executor -> manager   {"finished": "<task dir>", "code": <n>} its exit code
    manager -> executor   {"stop": true}                          leave (so does EOF)

The manager may send a task's ``run`` while another runs (a task offered
ahead, queued behind the job's current one): it waits in the socket and is
read as soon as the running task has said ``finished``.

A task runs exactly as in a one-task executor: the configured entry
(``task_executor.runner:run_task``) is called with the task directory, which
is the working directory meanwhile, and the task's ``executor.log`` receives
stdout and stderr (file descriptors 1 and 2 are pointed at it for the task,
then back at the job executor's own log).  ``SystemExit`` and exceptions end
the task, not the process.  What does end the process (a crash, ``os._exit``,
a kill on timeout) is seen by the task manager as the process's exit, and the
task it was running fails with that status.

Why the garbage is collected after the answer: user code re-run every round
leaves reference cycles (a script's functions and its module namespace);
collecting them keeps a long-lived executor's memory flat, and doing it
after ``finished`` is sent keeps it off the round's critical path.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOG_FILE = "executor.log"
MAX_LINE = 64 * 1024
SLOW_COLLECTION_SECONDS = 0.005
EntryFunction = Callable[[Path], int]


def exit_code(result: object) -> int:
    return result if isinstance(result, int) and 0 <= result <= 255 else 1


def _system_exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) and 0 <= exc.code <= 255 else 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass  # a closed or broken stream has nothing left to say


def _point_output_at(fd: int) -> None:
    _flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def run_one(entry: EntryFunction, task_dir: Path, home_fd: int, home: Path) -> int:
    """Run one task with its log as stdout/stderr and its folder as cwd; its exit code."""
    log_fd = os.open(task_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        _point_output_at(log_fd)
    finally:
        os.close(log_fd)
    code = 1
    try:
        os.chdir(task_dir)
        code = exit_code(entry(task_dir))
    except SystemExit as exc:
        code = _system_exit_code(exc)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        _point_output_at(home_fd)
        try:
            os.chdir(home)
        except OSError:
            pass  # the job folder was removed under us; the next task chdirs to its own
    return code


def tidy() -> None:
    """Collect the task's garbage; if that was slow, set aside what survived.

    The warm worker froze everything it had imported (``gc.freeze``), but tasks import more (the
    framework's lazily loaded parts: the first ``torch.optim`` step pulls in ``torch._dynamo``, a
    hundred thousand objects), and a full collection walks all of them: hundreds of milliseconds,
    every round.  So when a collection is slow, the survivors are frozen too, and later
    collections walk only what one round allocates.  Frozen objects that later become cyclic
    garbage are not reclaimed; what is alive after a collection is, by and large, modules and
    caches meant to live as long as the executor.
    """
    began = time.perf_counter()
    gc.collect()
    if time.perf_counter() - began > SLOW_COLLECTION_SECONDS:
        gc.freeze()


class ManagerChannel:
    """The executor's end of the socket: blocking, line by line."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = sock.makefile("rb")

    @classmethod
    def connect(cls, address: str, token: str) -> ManagerChannel:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.set_inheritable(False)
        sock.connect(address)
        channel = cls(sock)
        channel.send({"hello": token, "pid": os.getpid()})
        return channel

    def send(self, message: dict[str, Any]) -> None:
        self._sock.sendall((json.dumps(message) + "\n").encode())

    def receive(self) -> dict[str, Any] | None:
        """The next message; None at EOF (the task manager went away)."""
        line = self._reader.readline(MAX_LINE)
        if not line:
            return None
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"expected a JSON object, got {line[:100]!r}")
        return message

    def close(self) -> None:
        self._reader.close()
        self._sock.close()


def serve(entry: EntryFunction, channel: ManagerChannel, home: Path) -> int:
    """Run the tasks the task manager sends until it says stop or goes away; the process's exit code."""
    home_fd = os.open(home / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while (message := channel.receive()) is not None:
            if message.get("stop"):
                return 0
            task_dir = message.get("run")
            if not isinstance(task_dir, str):
                print(
                    f"job executor: ignored an unknown request {message!r:.200}", file=sys.stderr, flush=True
                )
                continue
            code = run_one(entry, Path(task_dir), home_fd, home)
            channel.send({"finished": task_dir, "code": code})
            tidy()
        return 0
    finally:
        os.close(home_fd)
        channel.close()
