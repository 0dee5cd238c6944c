"""The warm worker: a fork server that has imported the framework, one per runtime.

``python -m task_manager.warm_worker --runtime pytorch --preload torch --entry task_executor.runner:run_task``

Why: starting Python and importing torch costs seconds per round; a process
that imported it once can ``fork()`` a fresh executor in milliseconds, and the
child still is one process per task (its own pid, session, log and exit
code), so a crash or a kill touches one task only.

What it does, in order: sets ``PR_SET_PDEATHSIG`` so it dies with the task
manager; imports the preload modules, the executor entry's module and what the
executor's warm-up (``--warm-up``) imports for the runtime (only
imports: no thread pools, no gRPC channels, nothing a fork would copy in a
broken state); then reads launch requests as JSON lines on stdin
(``{"task_dir": ..., "launch": <n>}``, or with ``"task_dir": <job executor
folder>, "serve": {"address", "token"}`` for a job executor that serves a job's
tasks round after round, see :mod:`task_manager.job_executor_loop`) and
answers on stdout, each answer naming the request's ``launch`` number (one
folder may have two processes at once: a job's old executor and its next):

* ``{"event": "ready", "pid", "runtime", "preload_seconds"}`` once, after the imports;
* ``{"event": "started", "launch", "task_dir", "pid"}`` per fork;
* ``{"event": "failed", "launch", "task_dir", "error"}`` when it could not fork;
* ``{"event": "exited", "launch", "task_dir", "pid", "exit_code" | "signal"}`` when a child ends.

The worker is single-threaded on purpose (a fork copies only the calling
thread, so another thread's held lock would stay held forever in the child):
one ``select`` over stdin and a self-pipe that ``SIGCHLD`` writes to.  The one
thread an import does start, OpenBLAS's pool (numpy, torch), is rebuilt in
the child by OpenBLAS's own fork handler.  Nothing here initialises CUDA: a
CUDA context does not survive a fork, so GPU work starts in the child.  On
stdin EOF or SIGTERM it kills its children's process groups and exits.
What the preloaded libraries print goes to stderr: stdout is the protocol.

Each child: ``setsid()``; ``PR_SET_PDEATHSIG=SIGKILL`` (it dies if the worker
dies); stdin from ``/dev/null``, stdout and stderr to ``<task_dir>/executor.log``;
signal handlers back to their defaults; then it calls the entry with the task
directory and leaves with ``os._exit(code)``, never returning into the
worker's loop.  ``--once TASK_DIR`` runs that same child part in this
process: the task manager's cold path when no warm worker is available.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from task_manager import job_executor_loop

PR_SET_PDEATHSIG = 1
# How many nice levels below the task manager executors run (TaskManagerSettings.executor_nice).
NICE_VARIABLE = "NSFL_NICE_INCREMENT"
MAX_NICE = 19
PR_SET_NAME = 15
LOG_FILE = "executor.log"
EntryFunction = Callable[[Path], int]

log = logging.getLogger("task_manager.warm_worker")


def set_parent_death_signal(expected_parent: int | None) -> None:
    """Be sent SIGKILL when the parent dies; exit now if it already has (the race before prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(70)


def set_process_name(name: str) -> None:
    """What ``ps -o comm`` and ``top`` show: a forked executor otherwise looks exactly like its worker."""
    ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def load_entry(spec: str) -> EntryFunction:
    module_name, _, function_name = spec.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    if not callable(function):
        raise TypeError(f"executor entry {spec} is not callable")
    return function  # type: ignore[no-any-return]


def warm_up(spec: str, runtime: str) -> None:
    """Call the executor's warm-up (it imports what tasks would import lazily); a failure is only logged:
    the worker still serves, its children import on first use instead."""
    try:
        module_name, _, function_name = spec.partition(":")
        getattr(importlib.import_module(module_name), function_name)(runtime)
    except Exception:
        print(f"warm worker: the warm-up {spec} failed; continuing without it", file=sys.stderr, flush=True)
        traceback.print_exc()


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in (
        signal.SIGCHLD,
        signal.SIGTERM,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    ):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own default


def _redirect_output(task_dir: Path) -> None:
    log_fd = os.open(task_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null_fd)
    os.close(log_fd)
    # Fresh line-buffered streams: whatever the worker's objects had buffered must not reach this log.
    sys.stdin = open(0, closefd=False)  # lives as long as the process
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def _configure_child_logging() -> None:
    from libs.structured_logging import configure_logging

    configure_logging(
        os.environ.get("NSFL_LOG_LEVEL", "INFO"),
        json_output=os.environ.get("NSFL_LOG_JSON", "") == "1",
        component="task_executor",
        stream=sys.stderr,
    )


def lower_priority(increment: str) -> None:
    """Run ``increment`` nice levels below the task manager (``executor_nice``; empty or 0: as it).

    Twice, because Linux ranks processes in two places: the nice value counts among the processes of
    one scheduling group (a systemd service's cgroup: the task manager and its executors), and with
    autogroup scheduling (sessions outside such cgroups) a new session, as ``setsid`` just made, is a
    group of its own that competes with the others as a whole, at its autogroup's nice.  Lowering
    either is allowed without privileges.
    """
    try:
        nice = max(0, min(MAX_NICE, int(increment or 0)))
    except ValueError:
        nice = 0
    if not nice:
        return
    os.nice(nice)
    with contextlib.suppress(OSError):  # no autogroup scheduling on this kernel
        Path("/proc/self/autogroup").write_text(str(nice))


def run_child(
    entry: EntryFunction,
    task_dir: Path,
    parent: int | None,
    close_fds: Sequence[int],
    serve: Mapping[str, str] | None = None,
) -> NoReturn:
    """Become one task's executor and run it, or (``serve``) a job's executor; never returns."""
    code = 1
    try:
        try:
            os.setsid()
        except PermissionError:
            pass  # already a session leader (the cold path starts us in a new session)
        set_parent_death_signal(parent)
        lower_priority(os.environ.get(NICE_VARIABLE, ""))
        set_process_name("nsfl-executor" if serve is None else "nsfl-job-exec")
        _reset_signals()
        for fd in close_fds:
            os.close(fd)
        _redirect_output(task_dir)
        os.chdir(task_dir)
        _configure_child_logging()
        if serve is None:
            result = entry(task_dir)
        else:
            channel = job_executor_loop.ManagerChannel.connect(serve["address"], serve["token"])
            result = job_executor_loop.serve(entry, channel, task_dir)
        code = result if isinstance(result, int) and 0 <= result <= 255 else 1
    except SystemExit as exc:
        code = (
            exc.code if isinstance(exc.code, int) and 0 <= exc.code <= 255 else (0 if exc.code is None else 1)
        )
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass  # nothing left to report to
        os._exit(code)


class Worker:
    """The fork loop (see the module docstring)."""

    def __init__(self, entry: EntryFunction, runtime: str, protocol_fd: int) -> None:
        self.entry = entry
        self.runtime = runtime
        self.protocol_fd = protocol_fd
        self.pid = os.getpid()
        self.children: dict[int, tuple[str, object]] = {}  # pid -> (task_dir, launch number)
        self._buffer = b""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def send(self, **message: Any) -> None:
        data = (json.dumps(message) + "\n").encode()
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
            request = json.loads(line)
            task_dir = str(request["task_dir"])
            launch = request.get("launch")
            serve = request.get("serve")
            if serve is not None:
                serve = {"address": str(serve["address"]), "token": str(serve["token"])}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            print(f"warm worker: bad request {line[:200]!r}: {exc}", file=sys.stderr, flush=True)
            return
        self.launch(task_dir, serve, launch)

    def launch(self, task_dir: str, serve: Mapping[str, str] | None = None, launch: object = None) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            self.send(event="failed", launch=launch, task_dir=task_dir, error=f"fork failed: {exc}")
            return
        if pid == 0:
            fds = (self.protocol_fd, self._wake_r, self._wake_w)
            run_child(self.entry, Path(task_dir), self.pid, fds, serve)
        self.children[pid] = (task_dir, launch)
        self.send(event="started", launch=launch, task_dir=task_dir, pid=pid)

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
        child = self.children.pop(pid, None)
        if child is None:
            return
        task_dir, launch = child
        if os.WIFSIGNALED(status):
            self.send(event="exited", launch=launch, task_dir=task_dir, pid=pid, signal=os.WTERMSIG(status))
        else:
            code = os.waitstatus_to_exitcode(status)
            self.send(event="exited", launch=launch, task_dir=task_dir, pid=pid, exit_code=code)

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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m task_manager.warm_worker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--entry", required=True, help="module:function called with the task directory")
    parser.add_argument("--runtime", default="", help="the runtime this worker serves (for logs)")
    parser.add_argument("--preload", nargs="*", default=[], help="modules to import before forking")
    parser.add_argument(
        "--warm-up",
        default="",
        help="module:function called with the runtime after the preloads (imports only)",
    )
    parser.add_argument("--parent-pid", type=int, help="exit at once if this is no longer the parent")
    parser.add_argument("--once", type=Path, metavar="TASK_DIR", help="run one task in this process and exit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.once is not None:
        run_child(load_entry(args.entry), args.once.resolve(), args.parent_pid, ())
    set_parent_death_signal(args.parent_pid)
    set_process_name(f"nsfl-warm-{args.runtime}")
    protocol_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints of the preloaded libraries go to stderr, not into the protocol
    began = time.monotonic()
    for module in args.preload:
        importlib.import_module(module)
    entry = load_entry(args.entry)
    if args.warm_up and args.preload:  # a worker that preloads no framework has nothing to warm up
        warm_up(args.warm_up, args.runtime)
    # Objects that exist now are shared by every child; keeping the collector off them keeps them shared.
    gc.freeze()
    worker = Worker(entry, args.runtime, protocol_fd)
    worker.send(event="ready", pid=worker.pid, runtime=args.runtime, preload_seconds=time.monotonic() - began)
    try:
        worker.serve()
    except BrokenPipeError:
        pass  # the task manager is gone; shutdown() already killed the children
    return 0


if __name__ == "__main__":
    sys.exit(main())
