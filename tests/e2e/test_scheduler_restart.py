"""A real ``python -m job_scheduler`` killed with SIGKILL mid-flight, and a new one on the same state.

Three jobs are caught in three states when the first scheduler dies: one
RUNNING, one STOPPING (its coordinator takes a while to stop), one QUEUED
(no slot for it).  The second scheduler must bring each to the right end
(FINISHED, STOPPED, FINISHED) and launch no coordinator twice: the fake
coordinators write one line per start to a file, which is counted at the end.

The client selector is a stand-in that always has enough clients, so the
test is about the scheduler alone; coordinators are the test's fake.
"""

from __future__ import annotations

import json
import os
import signal
from collections import namedtuple
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from libs.protos import scheduler_pb2, scheduler_pb2_grpc, selector_pb2, selector_pb2_grpc
from tests.e2e.harness import ROOT, Cluster, wait_for
from tests.fixtures.pki import TestPki

FAKE = "tests.unit.job_scheduler.fake_coordinator"


class AllNamespaces(grpc.UnaryUnaryClientInterceptor):
    """Every call on behalf of an admin of all namespaces (the ``nsfl-namespaces`` metadata)."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), ("nsfl-namespaces", "*")]
        return continuation(
            CallDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready,
                        details.compression),
            request,
        )


class CallDetails(
    namedtuple("CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class PlentyOfClients(selector_pb2_grpc.ClientSelectorServicer):
    def SelectClients(self, request: selector_pb2.SelectRequest, context: Any) -> selector_pb2.SelectResponse:
        return selector_pb2.SelectResponse(matched=5, wanted=request.count, satisfied=True)


@pytest.fixture
def selector(test_pki: TestPki) -> Iterator[str]:
    # The generated base class declares every RPC abstract; this stand-in answers only SelectClients.
    make: Callable[[], selector_pb2_grpc.ClientSelectorServicer] = PlentyOfClients
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    selector_pb2_grpc.add_ClientSelectorServicer_to_server(make(), server)
    files = test_pki.files(test_pki.identity("selector"))
    credentials = grpc.ssl_server_credentials(
        [(files.key.read_bytes(), files.cert.read_bytes())], files.ca.read_bytes(), require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(autouse=True)
def no_coordinator_left(tmp_path: Path) -> Iterator[None]:
    """Coordinators outlive their scheduler by design: end the test's own when it is over."""
    yield
    for pid_file in (tmp_path / "state" / "jobs").glob("*/*/coordinator.pid"):
        try:
            os.killpg(json.loads(pid_file.read_text())["pid"], signal.SIGKILL)
        except (ProcessLookupError, ValueError, KeyError):
            pass


def start_scheduler(cluster: Cluster, name: str, selector: str, listen: str) -> tuple[Any, str]:
    port_file = cluster.base / f"{name}.port"
    env = {
        "PYTHONPATH": str(ROOT),
        "NSFL_SCHEDULER_STATE_DIR": str(cluster.base / "state"),
        "NSFL_SCHEDULER_SELECTOR": selector,
        "NSFL_SCHEDULER_COORDINATOR_MODULE": FAKE,
        "NSFL_SCHEDULER_MAX_RUNNING_JOBS": "2",
        "NSFL_SCHEDULER_ADMISSION_INTERVAL_SECONDS": "0.1",
        "NSFL_SCHEDULER_WATCH_INTERVAL_SECONDS": "0.1",
        **cluster.tls_env("NSFL_SCHEDULER_", "scheduler"),
        **cluster.issuer_env(),
    }
    proc = cluster.start(name, "-m", "job_scheduler", "--listen", listen, "--port-file", str(port_file), env=env)
    port = wait_for(f"{name}'s port file", lambda: port_file.exists() and port_file.read_text().strip(), 30,
                    [proc])
    return proc, f"127.0.0.1:{port}"


class Jobs:
    """The scheduler's JobControl as the API server calls it: its certificate, an admin's namespaces."""

    def __init__(self, address: str, pki: TestPki) -> None:
        wire = pki.wire(pki.identity("api-server"))
        self.channel = grpc.intercept_channel(
            wire.sync_channel(address, wire.control("scheduler")), AllNamespaces()
        )
        self.stub = scheduler_pb2_grpc.JobControlStub(self.channel)

    def submit(self, name: str, launches: Path, **fake: Any) -> None:
        spec = {"name": name, "namespace": "team", "runtime": "pytorch", "taskEntry": "train",
                "parameters": {"fake": {"launchesFile": str(launches), "report": True, **fake}}}
        self.stub.SubmitJob(scheduler_pb2.SubmitJobRequest(namespace="team", spec_json=json.dumps(spec)),
                            timeout=10)

    def get(self, name: str) -> dict[str, Any]:
        reply = self.stub.GetJob(scheduler_pb2.JobRef(namespace="team", name=name), timeout=10)
        return dict(json.loads(reply.job_json))

    def state(self, name: str) -> str:
        return str(self.get(name)["state"])


def test_a_killed_scheduler_is_replaced_and_every_job_ends_right_with_one_launch_each(
    cluster: Cluster, selector: str, tmp_path: Path
) -> None:
    launches = tmp_path / "launches.txt"
    first, address = start_scheduler(cluster, "scheduler-1", selector, "127.0.0.1:0")
    jobs = Jobs(address, cluster.pki)
    jobs.submit("running", launches, rounds=3, roundSeconds=1.5)
    jobs.submit("stopping", launches, rounds=1, holdSeconds=60, stopSeconds=3)
    wait_for("both jobs to run", lambda: {jobs.state("running"), jobs.state("stopping")} == {"RUNNING"}, 20,
             [first])
    jobs.submit("queued", launches, rounds=1)
    jobs.stub.StopJob(scheduler_pb2.JobRef(namespace="team", name="stopping"), timeout=10)
    assert [jobs.state(n) for n in ("running", "stopping", "queued")] == ["RUNNING", "STOPPING", "QUEUED"]
    first.stop(signal.SIGKILL)
    jobs.channel.close()

    second, _ = start_scheduler(cluster, "scheduler-2", selector, address)
    jobs = Jobs(address, cluster.pki)
    procs = [first, second]
    wait_for("the stop to complete", lambda: jobs.state("stopping") == "STOPPED", 30, procs)
    wait_for("the running job to finish", lambda: jobs.state("running") == "FINISHED", 30, procs)
    wait_for("the queued job to finish", lambda: jobs.state("queued") == "FINISHED", 30, procs)
    assert jobs.get("stopping")["reason"].startswith("stopped after round ")
    assert jobs.get("running")["status"]["round"] == 3
    started = [line.split()[0] for line in launches.read_text().splitlines()]
    assert sorted(started) == ["team/queued", "team/running", "team/stopping"], "no coordinator ran twice"
    jobs.channel.close()
