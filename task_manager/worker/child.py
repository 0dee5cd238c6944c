"""What an executor process does before its entry runs, whether forked warm or started cold.

Each child: ``setsid()``; ``PR_SET_PDEATHSIG=SIGKILL`` (it dies if its parent dies);
``executor_nice`` levels below the task manager (:func:`lower_priority`); stdin from
``/dev/null``, stdout and stderr to ``<task_dir>/executor.log``; signal handlers back to their
defaults; then it runs its body (the entry called with the task directory, or a job executor's
loop) and leaves with ``os._exit(code)``, never returning into the warm worker's loop.

Why here and not in the warm worker: the cold path (``--once``) runs the very same child part in a
fresh interpreter, so a task behaves the same whichever way it started.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from task_manager.worker.confinement import confine
from task_manager.worker.confinement_rules import Confinement
from task_manager.worker.launch_channel import LOG_FILE, MAX_NICE, NICE_VARIABLE

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
EntryFunction = Callable[[Path], int]


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


def exit_code(result: object) -> int:
    """An entry's return value as an exit code: an int 0-255 as is, anything else 1."""
    return result if isinstance(result, int) and 0 <= result <= 255 else 1


def system_exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exit_code(exc.code)


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


def set_home(task_dir: Path) -> None:
    """``HOME`` and ``TMPDIR`` in the executor's own folder: what user code writes "at home" or to a
    temporary file stays with its task (the rest of the environment is the daemon's allowlist)."""
    os.environ["HOME"] = str(task_dir)
    os.environ["TMPDIR"] = str(task_dir)
    tempfile.tempdir = None  # the warm worker's choice, if it made one, is read again


def _configure_child_logging() -> None:
    from libs.structured_logging import configure_logging

    configure_logging(
        os.environ.get("NSFL_LOG_LEVEL", "INFO"),
        json_output=os.environ.get("NSFL_LOG_JSON", "") == "1",
        component="task_executor",
        stream=sys.stderr,
    )


def run_child(
    body: Callable[[], object],
    task_dir: Path,
    parent: int | None,
    close_fds: Sequence[int],
    name: str = "nsfl-executor",
    confinement: Confinement | None = None,
) -> NoReturn:
    """Become an executor process for ``task_dir`` named ``name``, confined as ``confinement`` says
    (before any user code: a failure to confine ends the child), run ``body``, exit with its code."""
    code = 1
    try:
        try:
            os.setsid()
        except PermissionError:
            pass  # already a session leader (the cold path starts us in a new session)
        set_parent_death_signal(parent)
        lower_priority(os.environ.get(NICE_VARIABLE, ""))
        set_process_name(name)
        _reset_signals()
        for fd in close_fds:
            os.close(fd)
        _redirect_output(task_dir)
        os.chdir(task_dir)
        set_home(task_dir)
        if confinement is not None:
            confine(confinement)
        _configure_child_logging()
        code = exit_code(body())
    except SystemExit as exc:
        code = system_exit_code(exc)
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
