"""The warm worker: a fork server that has imported the framework, one per runtime.

``python -m task_manager.worker.warm_worker --runtime pytorch --preload torch --entry task_executor.runner:run_task``
(its command line is :class:`~.launch_channel.WorkerCommand`)

Why: starting Python and importing torch costs seconds per round; a process
that imported it once can ``fork()`` a fresh executor in milliseconds, and the
child still is one process per task (its own pid, session, log and exit
code), so a crash or a kill touches one task only.

What it does, in order: sets ``PR_SET_PDEATHSIG`` so it dies with the task
manager; imports the preload modules, the executor entry's module and what the
executor's warm-up (``--warm-up``) imports for the runtime (only
imports: no thread pools, no gRPC channels, nothing a fork would copy in a
broken state); says :class:`~.launch_channel.Ready`; then reads
:class:`~.launch_channel.LaunchRequest` lines on stdin (one with a
``serve`` address is a job executor that serves a job's tasks round after
round, see :mod:`.job_executor_loop`) and answers each on stdout,
naming the request's ``launch`` number: :class:`~.launch_channel.Started`
or :class:`~.launch_channel.ForkFailed` per fork, :class:`~.launch_channel.Exited`
when a child ends.  A malformed request is logged and skipped.

The worker is single-threaded on purpose (a fork copies only the calling
thread, so another thread's held lock would stay held forever in the child):
one ``select`` over stdin and a self-pipe that ``SIGCHLD`` writes to.  The one
thread an import does start, OpenBLAS's pool (numpy, torch), is rebuilt in
the child by OpenBLAS's own fork handler.  Nothing here initialises CUDA: a
CUDA context does not survive a fork, so GPU work starts in the child.  On
stdin EOF or SIGTERM it kills its children's process groups and exits.
What the preloaded libraries print goes to stderr: stdout is the protocol.

Each child becomes an executor as :mod:`.child` says, then calls the entry
with the task directory (or runs the job executor's loop).  ``--once TASK_DIR``
runs that same child part in this process: the task manager's cold path when
no warm worker is available.
"""

from __future__ import annotations

import gc
import importlib
import os
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from task_manager.worker import job_executor_loop
from task_manager.worker.child import (
    EntryFunction,
    load_entry,
    run_child,
    set_parent_death_signal,
    set_process_name,
)
from task_manager.worker.confinement import leave_pids_cgroup
from task_manager.worker.launch_channel import (
    Exited,
    ForkFailed,
    LaunchRequest,
    MalformedMessage,
    Ready,
    Started,
    WorkerAnswer,
    WorkerCommand,
)


def warm_up(spec: str, runtime: str) -> None:
    """Call the executor's warm-up (it imports what tasks would import lazily); a failure is only logged:
    the worker still serves, its children import on first use instead."""
    try:
        module_name, _, function_name = spec.partition(":")
        getattr(importlib.import_module(module_name), function_name)(runtime)
    except Exception:
        print(f"warm worker: the warm-up {spec} failed; continuing without it", file=sys.stderr, flush=True)
        traceback.print_exc()


def child_body(entry: EntryFunction, request: LaunchRequest) -> Callable[[], object]:
    """What the child forked for ``request`` runs: the entry once, or a job executor's loop."""
    task_dir, serve = Path(request.task_dir), request.serve
    if serve is None:
        return lambda: entry(task_dir)
    return lambda: job_executor_loop.serve(entry, job_executor_loop.ManagerChannel.connect(serve), task_dir)


class Worker:
    """The fork loop (see the module docstring)."""

    def __init__(self, entry: EntryFunction, runtime: str, protocol_fd: int) -> None:
        self.entry = entry
        self.runtime = runtime
        self.protocol_fd = protocol_fd
        self.pid = os.getpid()
        self.children: dict[int, LaunchRequest] = {}  # by pid
        self._buffer = b""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def send(self, answer: WorkerAnswer) -> None:
        data = answer.to_line()
        while data:
            data = data[os.write(self.protocol_fd, data) :]

    def serve(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)  # the wakeup pipe does the work
        selector = selectors.DefaultSelector()
        selector.register(0, selectors.EVENT_READ, "stdin")
        selector.register(self._wake_r, selectors.EVENT_READ, "signal")
        try:
            while True:
                for key, _ in selector.select():
                    if key.data == "signal" and self._on_signals():
                        return
                    if key.data == "stdin" and not self._on_input():
                        return
        finally:
            self.shutdown()

    def _on_signals(self) -> bool:
        """Reap children; True if asked to stop."""
        received = os.read(self._wake_r, 4096)
        self.reap()
        return signal.SIGTERM in received or signal.SIGINT in received

    def _on_input(self) -> bool:
        """Handle complete request lines; False on EOF."""
        data = os.read(0, 65536)
        if not data:
            return False
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._handle(line)
        return True

    def _handle(self, line: bytes) -> None:
        try:
            request = LaunchRequest.from_line(line)
        except MalformedMessage as exc:
            print(f"warm worker: bad request: {exc}", file=sys.stderr, flush=True)
            return
        self.launch(request)

    def launch(self, request: LaunchRequest) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            self.send(ForkFailed(request.launch, request.task_dir, f"fork failed: {exc}"))
            return
        if pid == 0:
            fds = (self.protocol_fd, self._wake_r, self._wake_w)
            name = "nsfl-executor" if request.serve is None else "nsfl-job-exec"
            body = child_body(self.entry, request)
            run_child(body, Path(request.task_dir), self.pid, fds, name, request.confine)
        self.children[pid] = request
        self.send(Started(request.launch, request.task_dir, pid))

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._report_exit(pid, status)

    def _report_exit(self, pid: int, status: int) -> None:
        request = self.children.pop(pid, None)
        if request is None:
            return
        if request.confine is not None and request.confine.limits.processes:
            leave_pids_cgroup(pid)
        if os.WIFSIGNALED(status):
            self.send(Exited(request.launch, request.task_dir, pid, signal=os.WTERMSIG(status)))
        else:
            code = os.waitstatus_to_exitcode(status)
            self.send(Exited(request.launch, request.task_dir, pid, exit_code=code))

    def shutdown(self) -> None:
        """Kill every child's group (unreaped children keep their pids, so these are ours) and reap them."""
        for pid in list(self.children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in list(self.children):
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            try:
                self._report_exit(pid, status)
            except OSError:
                self.children.pop(pid, None)  # the task manager is gone: nobody to tell


def main(argv: Sequence[str] | None = None) -> int:
    command = WorkerCommand.parse(argv)
    if command.once is not None:
        entry, task_dir = load_entry(command.entry), command.once.resolve()
        run_child(lambda: entry(task_dir), task_dir, command.parent_pid, (), confinement=command.confine)
    set_parent_death_signal(command.parent_pid)
    set_process_name(f"nsfl-warm-{command.runtime}")
    protocol_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints of the preloaded libraries go to stderr, not into the protocol
    began = time.monotonic()
    for module in command.preload:
        importlib.import_module(module)
    entry = load_entry(command.entry)
    if command.warm_up and command.preload:  # a worker that preloads no framework has nothing to warm up
        warm_up(command.warm_up, command.runtime)
    # Objects that exist now are shared by every child; keeping the collector off them keeps them shared.
    gc.freeze()
    worker = Worker(entry, command.runtime, protocol_fd)
    worker.send(Ready(worker.pid, command.runtime, time.monotonic() - began))
    try:
        worker.serve()
    except BrokenPipeError:
        pass  # the task manager is gone; shutdown() already killed the children
    return 0


if __name__ == "__main__":
    sys.exit(main())
