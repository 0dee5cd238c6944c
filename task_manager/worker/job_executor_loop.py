"""Inside a job executor: the loop that runs one job's tasks, round after round, in one process.

A job executor is forked by the warm worker like a one-task executor (its
own session and process group, ``PR_SET_PDEATHSIG``, the framework already
imported), but instead of running one task and exiting it connects back to
its task manager over a local Unix socket and serves the job's tasks in turn
until it is told to stop.  What a round no longer pays: the fork, the
interpreter's warm-up of the executor's own modules, a new gRPC channel to the
coordinator (the executor keeps it), the user's imports and whatever the user
code keeps in ``nsfl.cache`` (parsed data sets).

The channel's messages are :mod:`.job_channel`'s: the executor says
``Hello`` (its token and pid) once, then ``Finished`` (the task's exit code) for
each ``RunTask``; ``Stop`` or the end of the socket ends it.  A malformed line
is logged in the job executor's own log and skipped.

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
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from task_manager.worker.child import EntryFunction, exit_code, system_exit_code
from task_manager.worker.job_channel import (
    MAX_LINE,
    ChannelAddress,
    Finished,
    ForExecutor,
    ForManager,
    Hello,
    MalformedMessage,
    Stop,
    decode_for_executor,
)
from task_manager.worker.launch_channel import LOG_FILE

SLOW_COLLECTION_SECONDS = 0.005


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
        code = system_exit_code(exc)
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
    def connect(cls, address: ChannelAddress) -> ManagerChannel:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.set_inheritable(False)
        sock.connect(address.address)
        channel = cls(sock)
        channel.send(Hello(address.token, os.getpid()))
        return channel

    def send(self, message: ForManager) -> None:
        self._sock.sendall(message.to_line())

    def receive(self) -> ForExecutor | None:
        """The next message; None at EOF (the task manager went away); :class:`MalformedMessage`."""
        line = self._reader.readline(MAX_LINE)
        if not line:
            return None
        return decode_for_executor(line)

    def close(self) -> None:
        self._reader.close()
        self._sock.close()


def serve(entry: EntryFunction, channel: ManagerChannel, home: Path) -> int:
    """Run the tasks the task manager sends until it says stop or goes away; the process's exit code."""
    home_fd = os.open(home / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                message = channel.receive()
            except MalformedMessage as exc:
                print(f"job executor: ignored a request: {exc}", file=sys.stderr, flush=True)
                continue
            if message is None or isinstance(message, Stop):
                return 0
            code = run_one(entry, Path(message.task_dir), home_fd, home)
            channel.send(Finished(message.task_dir, code))
            tidy()
    finally:
        os.close(home_fd)
        channel.close()
