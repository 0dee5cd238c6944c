"""Starting nsfl's real processes on loopback for end-to-end tests.

Each process is started with ``python -m <component>``, its output goes to a
log file under the test's directory, and readiness is awaited with a
deadline (a port file, a status file, or a log line).  Teardown terminates,
then kills, every process still running, and a failing test shows the tail
of every log so the cause is visible in CI output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.pki import TestPki

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def wait_for(what: str, check: Callable[[], Any], timeout: float, procs: list[Proc] | None = None,
             interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail with logs at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    logs = "\n".join(f"--- {p.name} (rc={p.popen.poll()}) ---\n{p.tail()}" for p in procs or [])
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")


@dataclass
class Cluster:
    """The processes of one test, torn down together."""

    base: Path
    pki: TestPki
    procs: list[Proc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    # --- identities: every process of a cluster speaks mutual TLS with certificates of one test CA ---

    def tls_env(self, prefix: str, kind: str, *path: str) -> dict[str, str]:
        """``<prefix>TLS_*`` and ``<prefix>TRUST_DOMAIN`` for a process of that identity."""
        return self.pki.env(prefix, self.pki.identity(kind, *path))

    def tls_config(self, client_id: str) -> dict[str, str]:
        """The ``tls_*`` keys of a task manager's config file."""
        settings = self.pki.settings(self.pki.identity("client", client_id))
        return {key: str(value) for key, value in settings.items()}

    def issuer_env(self) -> dict[str, str]:
        """What a scheduler needs to sign its coordinators' certificates."""
        return {
            "NSFL_SCHEDULER_COORDINATOR_ISSUER_CERT": str(self.pki.directory.issuer),
            "NSFL_SCHEDULER_COORDINATOR_ISSUER_KEY": str(self.pki.directory.issuer_key),
        }

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        log = self.base / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(env or {})}
        handle = open(log, "ab")
        popen = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                 env=full_env, start_new_session=True)
        handle.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def start_selector(self, *, heartbeat_interval: float = 0.5, heartbeat_timeout: float = 3.0) -> str:
        port_file = self.base / "selector.port"
        proc = self.start("selector", "-m", "client_selector", "--listen", "127.0.0.1:0",
                          "--port-file", str(port_file),
                          env={"NSFL_SELECTOR_STATE_DIR": str(self.base / "selector"),
                               "NSFL_SELECTOR_HEARTBEAT_INTERVAL_SECONDS": str(heartbeat_interval),
                               "NSFL_SELECTOR_HEARTBEAT_TIMEOUT_SECONDS": str(heartbeat_timeout),
                               **self.tls_env("NSFL_SELECTOR_", "selector")})
        port = wait_for("the selector's port file", lambda: port_file.exists() and port_file.read_text().strip(),
                        30, [proc])
        return f"127.0.0.1:{port}"

    def start_task_manager(self, name: str, config: dict[str, Any]) -> Proc:
        path = self.base / f"{name}.yaml"
        if not config.get("insecure"):
            config = {**self.tls_config(str(config["client_id"])), **config}
        path.write_text(yaml.safe_dump(config))
        return self.start(name, "-m", "task_manager", "--config", str(path))

    def start_coordinator(self, name: str, job: dict[str, Any], *, selector: str, workdir: Path,
                          state: Path) -> Proc:
        workdir.mkdir(parents=True, exist_ok=True)
        state.mkdir(parents=True, exist_ok=True)
        job_file = workdir / "job.json"
        job_file.write_text(json.dumps(job))
        identity = ("coordinator", str(job.get("namespace", "default")), str(job["name"]))
        return self.start(name, "-m", "coordinator", "--job", str(job_file), "--workdir", str(workdir),
                          "--selector", selector, "--document-store", f"sqlite://{state / 'nsfl.db'}",
                          "--object-store", f"file://{state / 'objects'}",
                          env=self.tls_env("NSFL_COORDINATOR_", *identity))

    def teardown(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (rc={p.popen.poll()}) ---\n{p.tail(60)}" for p in self.procs)


def read_status(workdir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((workdir / "status.json").read_text()))
    except (OSError, ValueError):
        return {}


def iter_evaluations(status: dict[str, Any]) -> Iterator[tuple[int, dict[str, float]]]:
    for record in status.get("history", []):
        if record.get("evaluation"):
            yield record["round"], record["evaluation"]
