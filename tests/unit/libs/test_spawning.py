"""A detached process: its own session, stdin from /dev/null, output in the log, only the fds passed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from libs.spawning import appended_log, spawn_detached, utc_stamp

REPORT = """
import os, sys
print("session", os.getsid(0) == os.getpid())
print("stdin", sys.stdin.read() == "")
for fd in map(int, sys.argv[1:]):
    try:
        os.fstat(fd)
        print("open", fd)
    except OSError:
        print("closed", fd)
"""


def wait_for_exit(pid: int) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    raise AssertionError("the child did not exit")


def test_the_child_runs_in_its_own_session_with_the_passed_fd_and_no_other(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "child.log"
    passed, kept = os.pipe()
    try:
        with appended_log(log_file, f"started at {utc_stamp()}") as log_fd:
            pid = spawn_detached(
                [sys.executable, "-c", REPORT, str(passed), str(kept)], dict(os.environ),
                output=log_fd, pass_fds=[passed],
            )  # fmt: skip
        assert wait_for_exit(pid) == 0
        assert not os.get_inheritable(passed), "the passed fd is inheritable only for the spawn"
    finally:
        os.close(passed)
        os.close(kept)
    lines = log_file.read_text().splitlines()
    assert lines[0].startswith("--- started at ") and lines[0].endswith("Z ---")
    assert lines[1:] == ["session True", "stdin True", f"open {passed}", f"closed {kept}"]
    assert (log_file.stat().st_mode & 0o777) == 0o600


def test_the_log_is_appended_to_across_launches(tmp_path: Path) -> None:
    log_file = tmp_path / "child.log"
    for launch in (1, 2):
        with appended_log(log_file, f"launch {launch}") as log_fd:
            pid = spawn_detached(["echo", f"ran {launch}"], {"PATH": os.environ["PATH"]}, output=log_fd)
        assert wait_for_exit(pid) == 0
    assert log_file.read_text() == "--- launch 1 ---\nran 1\n--- launch 2 ---\nran 2\n"
