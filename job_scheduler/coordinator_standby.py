"""A coordinator process started (and imported) before its job: the local platform's fast start.

Starting ``python -m coordinator`` costs the interpreter and over a second of
imports, all of it between a user's submit and the job's first round.  So
the local platform keeps one *standby*: ``python -m coordinator.standby``,
spawned like a coordinator (:func:`libs.spawning.spawn_detached`: its own
session, default signals, output to a log) but with no job; it imports everything and waits on a Unix socket.
:meth:`Standby.hand_over` sends it the job's arguments and environment with
the job's log and lock files (``socket.send_fds``: the very open file that
holds the job's ``flock``, so the lock is never released during the
handoff), and from then on it *is* that job's coordinator: a child of this
scheduler, reaped with ``waitpid`` like one started cold.

A standby that died (or never came up) is not used: :meth:`hand_over`
returns None and the platform starts the coordinator cold, as without a
standby.  One that is never used ends when the scheduler goes away (end of
file on its socket) or when :meth:`stop` closes the socket.  Its command line
carries ``--workdir <jobs dir>/.standby`` so that whatever looks for the
coordinators of a state directory by their ``--workdir`` (``nsfl-ctl
standalone down``) finds it too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from libs.spawning import appended_log, spawn_detached

log = logging.getLogger(__name__)

STANDBY_DIR = ".standby"
STANDBY_LOG = ".standby.log"


class Standby:
    """One standby coordinator process and this scheduler's end of its socket."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid = pid
        self._channel: socket.socket | None = channel

    @classmethod
    def spawn(
        cls,
        python: str,
        module: str,
        jobs_dir: Path,
        env: Mapping[str, str],
        *,
        coordinator: str = "coordinator",
    ) -> Standby:
        """Start ``python -m <module>`` as the standby of ``python -m <coordinator>``."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            argv = [
                python, "-m", module,
                "--channel-fd", str(theirs.fileno()),
                "--workdir", str(jobs_dir / STANDBY_DIR),
                "--module", coordinator,
            ]  # fmt: skip
            with appended_log(jobs_dir / STANDBY_LOG) as log_fd:
                pid = spawn_detached(argv, env, output=log_fd, pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        log.info("started a standby coordinator (pid %d)", pid)
        return cls(pid, ours)

    def alive(self) -> bool:
        if self._channel is None:
            return False
        try:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        if done:
            log.warning("the standby coordinator (pid %d) ended before it was used", self.pid)
            self._close()
            return False
        return True

    def hand_over(self, args: Sequence[str], env: Mapping[str, str], log_fd: int, lock_fd: int) -> int | None:
        """Make the standby the coordinator of a job; its pid, or None if it cannot take it."""
        if not self.alive():
            return None
        assert self._channel is not None
        message = json.dumps({"args": list(args), "env": dict(env)}).encode()
        try:
            socket.send_fds(self._channel, [message], [log_fd, lock_fd])
        except OSError as exc:
            log.warning("could not hand a job to the standby coordinator (pid %d): %s", self.pid, exc)
            self._close()
            return None
        self._close()
        return self.pid

    def stop(self) -> None:
        """End an unused standby (it sees end of file) and reap it."""
        if self._channel is None:
            return
        self._close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def _close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
