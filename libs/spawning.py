"""Starting processes meant to outlive their parent: a new session, output to a log, chosen fds.

Three places start such processes: the local platform its coordinators
(which keep training while the scheduler restarts), the same platform its
standby coordinator, and ``nsfl-ctl standalone up`` the control plane (which
keeps running after the command returns).  Each wants the same thing: the
child in its own session (a Ctrl-C in the terminal does not reach it; its
whole group can be killed), stdin from ``/dev/null``, stdout and stderr
appended to a log file, default dispositions for the signals it is stopped
with, and, open in the child, exactly the file descriptors named (a lock
that must be held as long as the child lives, a socket to talk to it).

``os.posix_spawnp`` rather than ``subprocess.Popen``: a ``Popen`` object for
a process meant to outlive us warns when it is collected, and all that is
needed is a pid.  The parent reaps a child of its own with ``waitpid``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

LOG_MODE = 0o600  # a log may quote settings, paths and peers: its owner's only


def utc_stamp() -> str:
    """Now, as the log headings write it (``2024-05-01T12:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextlib.contextmanager
def appended_log(path: Path, heading: str | None = None) -> Iterator[int]:
    """``path`` open for appending (made, with its folders, if missing), ``--- heading ---`` first.

    Yields the descriptor, closed on the way out: a spawned child holds its own copy.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, LOG_MODE)
    try:
        if heading is not None:
            os.write(fd, f"--- {heading} ---\n".encode())
        yield fd
    finally:
        os.close(fd)


def spawn_detached(
    argv: Sequence[str], env: Mapping[str, str], *, output: int, pass_fds: Sequence[int] = ()
) -> int:
    """Start ``argv`` (looked up on ``PATH``) in a new session; its pid.

    ``output`` becomes the child's stdout and stderr; ``pass_fds`` stay open in the child under the
    same numbers.  Every other descriptor of ours is closed in the child, as Python opens them
    non-inheritable; the ones passed are made inheritable only for the spawn.
    """
    was = [(fd, os.get_inheritable(fd)) for fd in pass_fds]
    for fd in pass_fds:
        os.set_inheritable(fd, True)
    try:
        return os.posix_spawnp(
            argv[0], list(argv), dict(env),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, output, 1),
                (os.POSIX_SPAWN_DUP2, output, 2),
            ],
            setsid=True,
            setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGPIPE),
        )  # fmt: skip
    finally:
        for fd, inheritable in was:
            os.set_inheritable(fd, inheritable)
