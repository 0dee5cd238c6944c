"""The control plane as a user drives it: the real nsfl-ctl and REST against a standalone
control plane (selector, scheduler, API server) with three real task managers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from libs.protos import scheduler_pb2, scheduler_pb2_grpc
from libs.wire import Wire
from tests.e2e.conftest import client_config, digits_job
from tests.e2e.harness import ROOT, Cluster, wait_for
from tests.fixtures.pki import TestPki

pytestmark = pytest.mark.slow

ADMIN, TEAM_A, TEAM_B = "admin-token-0123456789abcdef", "team-a-token-0123456789abcdef", "team-b-token-0123456789ab"


@dataclass
class Plane:
    state: Path
    config: Path
    api: str
    cluster: Cluster

    def ctl(self, *args: str, timeout: float = 120, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {"NSFL_CTL_CONFIG": str(self.config), "PATH": str(Path(sys.executable).parent)}
        if token:
            env["NSFL_TOKEN"] = token
        return subprocess.run([str(Path(sys.executable).parent / "nsfl-ctl"), *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def rest(self, method: str, path: str, body: Any = None, token: str = ADMIN) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api}{path}", data=data, method=method,
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode()

    def job(self, name: str, ns: str = "default", token: str = ADMIN) -> dict[str, Any]:
        status, body = self.rest("GET", f"/api/v1/namespaces/{ns}/jobs/{name}", token=token)
        assert status == 200, body
        return dict(body)

    def wait_state(self, name: str, states: set[str], timeout: float, ns: str = "default") -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(name, ns)
            return job if job["state"] in states else None

        return dict(wait_for(f"job {name} to reach {states}", reached, timeout, self.cluster.procs, interval=0.5))


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, digits_shares: Any) -> Iterator[Plane]:
    base = tmp_path_factory.mktemp("plane")
    state = base / "state"
    state.mkdir(mode=0o700)
    (state / "tokens.yaml").write_text(yaml.safe_dump({"tokens": [
        {"name": "admin", "token": ADMIN, "namespaces": ["*"], "role": "admin"},
        {"name": "team-a", "token": TEAM_A, "namespaces": ["team-a"], "role": "editor"},
        {"name": "team-b", "token": TEAM_B, "namespaces": ["team-b"], "role": "editor"},
    ]}))
    (state / "tokens.yaml").chmod(0o600)
    made = Plane(state, base / "ctl.yaml", "", None)  # the cluster comes once the plane made its CA
    up = made.ctl("standalone", "up", "--state-dir", str(state), "--port", "0", "--selector-port", "0",
                  timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    # The plane made its own CA: the clients get their certificates from it.
    cluster = made.cluster = Cluster(base, TestPki.existing(state / "pki"))
    record = json.loads((state / "standalone.json").read_text())
    made.api = yaml.safe_load(made.config.read_text())["api"]
    selector = next(f"127.0.0.1:{c['port']}" for c in record["components"] if c["name"] == "selector")
    for index, share in enumerate(digits_shares.values()):
        name = f"client-{index}"
        cluster.start_task_manager(name, client_config(name, share, selector, base / name))
    wait_for("three clients alive", lambda: len([c for c in made.rest("GET", "/api/v1/clients")[1]["clients"]
                                                 if c["liveness"] == "alive"]) == 3, 120, cluster.procs)
    try:
        yield made
    finally:
        cluster.teardown()
        down = made.ctl("standalone", "down", "--state-dir", str(state), timeout=120)
        assert down.returncode == 0, down.stderr


def write_job(plane: Plane, name: str, **changes: Any) -> Path:
    path = plane.state.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(digits_job(name, **changes)))
    return path


def test_create_watch_finish_while_a_job_without_enough_clients_fails_within_its_deadline(plane: Plane) -> None:
    starving = write_job(plane, "starving", clientsPerRound=5, minClients=5, pendingTimeoutSeconds=6)
    created = plane.ctl("create", "job", "-f", str(starving))
    assert created.returncode == 0, created.stderr
    good = write_job(plane, "good", rounds=3, evaluateEvery=3)
    assert plane.ctl("create", "job", "-f", str(good)).returncode == 0
    started = time.monotonic()
    failed = plane.wait_state("starving", {"FAILED", "FINISHED"}, 60)
    assert failed["state"] == "FAILED" and "InsufficientClients 3/5" in failed["reason"], failed
    assert time.monotonic() - started < 30
    watched = plane.ctl("get", "job", "good", "-w", "--timeout", "240", timeout=260)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    job = plane.job("good")
    assert job["state"] == "FINISHED" and job["status"]["round"] == 3
    assert job["status"]["lastMetrics"]["accuracy"] >= 0.85
    listed = plane.ctl("get", "jobs", "-o", "json")
    assert {j["name"] for j in json.loads(listed.stdout)["jobs"]} >= {"good", "starving"}


def test_stop_mid_run_then_start_again_finishes_with_the_right_number_of_rounds(plane: Plane) -> None:
    # Enough rounds that the stop lands mid-run even when rounds take some 50 ms (long-lived executors).
    path = write_job(plane, "resumable", rounds=100, evaluateEvery=100)
    assert plane.ctl("create", "job", "-f", str(path)).returncode == 0
    wait_for("round 2 of the job", lambda: plane.job("resumable")["status"].get("round", 0) >= 2, 240,
             plane.cluster.procs, interval=0.1)
    stopped = plane.ctl("stop", "job", "resumable")
    assert stopped.returncode == 0, stopped.stderr
    job = plane.wait_state("resumable", {"STOPPED"}, 120)
    assert job["status"]["checkpoints"], job
    stopped_at = job["status"]["round"]
    assert stopped_at < 100
    assert plane.ctl("start", "job", "resumable").returncode == 0
    assert plane.ctl("get", "job", "resumable", "-w", "--timeout", "300", timeout=320).returncode == 0
    status, metrics = plane.rest("GET", "/api/v1/namespaces/default/jobs/resumable/metrics")
    assert status == 200
    rounds = sorted(record["round"] for record in metrics["rounds"])
    assert rounds == list(range(1, 101))
    logs = plane.ctl("logs", "job", "resumable", "--tail", "200")
    assert f"resuming after round {stopped_at}" in logs.stdout


def test_delete_removes_the_job(plane: Plane) -> None:
    path = write_job(plane, "doomed", clientsPerRound=5, minClients=5, pendingTimeoutSeconds=300)
    assert plane.ctl("create", "job", "-f", str(path)).returncode == 0
    deleted = plane.ctl("delete", "job", "doomed")
    assert deleted.returncode == 0, deleted.stderr
    wait_for("the job to be gone", lambda: plane.rest("GET", "/api/v1/namespaces/default/jobs/doomed")[0] == 404,
             60, plane.cluster.procs)


def test_two_namespaces_with_separate_tokens_cannot_see_each_others_jobs(plane: Plane) -> None:
    spec = digits_job("private", namespace="team-a", clientsPerRound=5, minClients=5, pendingTimeoutSeconds=300)
    status, _ = plane.rest("POST", "/api/v1/namespaces/team-a/jobs", spec, token=TEAM_A)
    assert status == 201
    assert plane.rest("GET", "/api/v1/namespaces/team-a/jobs/private", token=TEAM_B)[0] == 404
    assert plane.rest("GET", "/api/v1/namespaces/team-a/jobs", token=TEAM_B)[0] == 404
    assert plane.rest("DELETE", "/api/v1/namespaces/team-a/jobs/private", token=TEAM_B)[0] == 404
    seen = plane.ctl("get", "job", "private", "-n", "team-a", token=TEAM_B)
    assert seen.returncode != 0 and seen.stderr.startswith("Error:") and "Traceback" not in seen.stderr
    assert plane.rest("DELETE", "/api/v1/namespaces/team-a/jobs/private", token=TEAM_A)[0] in (200, 202)


def test_the_scheduler_answers_job_control_to_the_api_server_only(plane: Plane) -> None:
    """An outsider without a certificate, and an enrolled client with one, cannot list or delete jobs."""
    spec = digits_job("guarded", namespace="team-a", clientsPerRound=5, minClients=5, pendingTimeoutSeconds=300)
    assert plane.rest("POST", "/api/v1/namespaces/team-a/jobs", spec, token=TEAM_A)[0] == 201
    record = json.loads((plane.state / "standalone.json").read_text())
    scheduler = next(f"127.0.0.1:{c['port']}" for c in record["components"] if c["name"] == "scheduler")
    pki = plane.cluster.pki
    ref = scheduler_pb2.JobRef(namespace="team-a", name="guarded")
    for wire, refused in ((Wire.insecure(), grpc.StatusCode.UNAVAILABLE),
                          (pki.wire(pki.identity("client", "client-0")), grpc.StatusCode.PERMISSION_DENIED)):
        with wire.sync_channel(scheduler, wire.control("scheduler")) as channel:
            stub = scheduler_pb2_grpc.JobControlStub(channel)
            admin = [("nsfl-namespaces", "*")]
            for method, request in ((stub.DeleteJob, ref), (stub.ListJobs, scheduler_pb2.ListJobsRequest())):
                with pytest.raises(grpc.RpcError) as caught:
                    method(request, timeout=10, metadata=admin)
                assert caught.value.code() == refused
    assert plane.rest("GET", "/api/v1/namespaces/team-a/jobs/guarded", token=TEAM_A)[0] == 200
    assert plane.rest("DELETE", "/api/v1/namespaces/team-a/jobs/guarded", token=TEAM_A)[0] in (200, 202)
