"""A standby coordinator reads its wire settings from the environment it is handed, not the one it started with.

The job scheduler starts ``python -m coordinator.standby`` ahead of need, with
no job and no certificate, and hands it a job's arguments and environment
(``NSFL_COORDINATOR_TLS_*``) later.  Here the standby starts with plaintext
allowed and is handed a certificate for another job: it must refuse that
certificate, which it can only do if it read the settings after the hand-over.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.fixtures.pki import TestPki

ROOT = Path(__file__).resolve().parents[3]


def test_the_certificate_handed_over_is_the_one_the_coordinator_checks(test_pki: TestPki, tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"name": "job", "namespace": "ns", "runtime": "pytorch", "taskEntry": "train",
                               "datasets": ["digits"], "rounds": 1, "clientsPerRound": 1}))
    env = {**test_pki.env("NSFL_COORDINATOR_", test_pki.identity("coordinator", "ns", "other")),
           "NSFL_COORDINATOR_DOCUMENT_STORE": f"sqlite:///{tmp_path / 'nsfl.db'}",
           "NSFL_COORDINATOR_OBJECT_STORE": f"file://{tmp_path / 'objects'}"}  # fmt: skip
    ours, theirs = socket.socketpair()
    started_with = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "NSFL_COORDINATOR_INSECURE": "true"}
    standby = subprocess.Popen(
        [sys.executable, "-m", "coordinator.standby", "--channel-fd", str(theirs.fileno())],
        pass_fds=[theirs.fileno()], env=started_with, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    theirs.close()
    try:
        assert standby.stdout is not None
        assert "waiting for a job" in standby.stdout.readline()
        log, lock = tmp_path / "coordinator.log", tmp_path / "coordinator.lock"
        with open(log, "wb") as log_file, open(lock, "wb") as lock_file:
            message = json.dumps({"args": ["--job", str(job), "--workdir", str(tmp_path / "work")], "env": env})
            socket.send_fds(ours, [message.encode()], [log_file.fileno(), lock_file.fileno()])
        assert standby.wait(60) == 2
    finally:
        ours.close()
        if standby.poll() is None:
            standby.kill()
            standby.wait()
        if standby.stdout is not None:
            standby.stdout.close()
    error = log.read_text().splitlines()[-1]
    assert error.startswith("Error: setting 'tls_cert'") and "coordinator of job ns/other" in error
    assert "runs job ns/job" in error
