"""``python -m coordinator.standby --channel-fd N [--module coordinator]``: a coordinator started before its job.

Why: a coordinator's imports (grpc, numpy, scipy, the aggregation and privacy
code) take more than a second, and a user waits for them between submitting
a job and its first round.  The scheduler's local platform therefore keeps
one coordinator process started and imported ahead of need; when a job is
admitted it hands that process the job and starts the next standby.

The handoff, on the Unix socket inherited as ``--channel-fd`` (one message,
``socket.send_fds``): ``{"args": [...], "env": {...}}`` with two file
descriptors, the job's ``coordinator.log`` (it becomes stdout and stderr)
and its ``coordinator.lock`` (held open, so the lock is held exactly as long
as this process lives, as it is for a coordinator started cold).  The
environment replaces this process's, then ``python -m coordinator <args>``
runs here, already imported (``--module`` names another module with the same
command line and a ``main(argv) -> int``, as the scheduler's tests do with
their stand-in coordinator).  End of file on the socket (the scheduler went
away before handing over a job) ends the standby.

Until the handoff nothing is opened: no store, no channel, no event loop, so
the process is the same as a cold one from the job's point of view.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import cast

MAX_MESSAGE = 1 << 20


def load_main(module: str) -> Callable[[list[str]], int]:
    """``module``'s ``main`` (a package's ``__main__``'s), imported now: the point of a standby."""
    loaded = importlib.import_module(module)
    if not hasattr(loaded, "main") and hasattr(loaded, "__path__"):
        loaded = importlib.import_module(f"{module}.__main__")
    return cast(Callable[[list[str]], int], loaded.main)


def take_over(channel: socket.socket) -> list[str] | None:
    """Wait for the job; install its output, lock and environment; its arguments (None: no job came)."""
    try:
        message, fds, _, _ = socket.recv_fds(channel, MAX_MESSAGE, 4)
    except OSError:
        return None
    if not message or len(fds) != 2:
        return None
    request = json.loads(message)
    log_fd, _lock_fd = fds  # the lock stays open for this process's life: it *is* the lock
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in request["env"].items()})
    return [str(arg) for arg in request["args"]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coordinator.standby", description=__doc__.splitlines()[0])
    parser.add_argument("--channel-fd", type=int, required=True, help="the inherited socket to the scheduler")
    parser.add_argument("--workdir", help="where standbys are kept (for process listings; unused)")
    parser.add_argument("--module", default="coordinator", help="the coordinator module to run")
    args = parser.parse_args(argv)
    run = load_main(args.module)
    channel = socket.socket(fileno=args.channel_fd)
    print(f"standby coordinator {os.getpid()} imported and waiting for a job", flush=True)
    job_args = take_over(channel)
    channel.close()
    if job_args is None:
        return 0
    sys.argv = [sys.argv[0], *job_args]
    return run(job_args)


if __name__ == "__main__":
    sys.exit(main())
