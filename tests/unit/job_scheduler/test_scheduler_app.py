"""The whole scheduler in-process over gRPC with mutual TLS, launching fake coordinators through the local platform.

Only the client selector is faked (its dry-run answer); the store, the
object store, the platform, the coordinators' processes (with the
certificates the scheduler signs them), their progress reports over mTLS and
the supervisor's loops are all real.  The test calls as the API server does:
with the API server's certificate and the end user's namespaces in metadata.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from job_scheduler.app import SchedulerApp
from job_scheduler.settings import SchedulerSettings
from libs.protos import scheduler_pb2, scheduler_pb2_grpc
from libs.wire import Wire
from tests.fixtures.pki import TestPki
from tests.unit.job_scheduler.fakes import FakeAvailability, scheduler_wire, spec

ROOT = Path(__file__).resolve().parents[3]
FAKE = "tests.unit.job_scheduler.fake_coordinator"
TERMINAL = {"FINISHED", "FAILED", "STOPPED"}


def job_control(channel: grpc.aio.Channel) -> scheduler_pb2_grpc.JobControlStub:
    make: Callable[[grpc.aio.Channel], scheduler_pb2_grpc.JobControlStub] = scheduler_pb2_grpc.JobControlStub
    return make(channel)


class Scoped:
    """A ``JobControl`` stub whose calls carry an end user's namespaces, as the API server sends them."""

    def __init__(self, stub: scheduler_pb2_grpc.JobControlStub, namespaces: str | None) -> None:
        self._stub = stub
        self._namespaces = namespaces

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)
        metadata = () if self._namespaces is None else (("nsfl-namespaces", self._namespaces),)

        def call(request: Any, **options: Any) -> Any:
            return method(request, metadata=metadata, timeout=10, **options)

        return call


class Client:
    def __init__(self, channel: grpc.aio.Channel, port: int, pki: TestPki, tmp_path: Path) -> None:
        self.stub = Scoped(job_control(channel), "team-a")
        self.channel, self.port, self.pki = channel, port, pki
        self.launches = tmp_path / "launches.txt"

    def as_user(self, namespaces: str | None) -> Scoped:
        """The stub for an end user of ``namespaces`` (None: a call without the metadata)."""
        return Scoped(job_control(self.channel), namespaces)

    def stub_of(self, wire: Wire) -> tuple[grpc.aio.Channel, scheduler_pb2_grpc.JobControlStub]:
        """A channel and a stub to the scheduler with another identity's ``wire``."""
        channel = wire.channel(f"127.0.0.1:{self.port}", wire.control("scheduler"))
        return channel, job_control(channel)

    async def submit(self, name: str, namespace: str = "team-a", **fake: Any) -> dict[str, Any]:
        fake.setdefault("launchesFile", str(self.launches))
        fake.setdefault("report", True)
        changes = {k: fake.pop(k) for k in list(fake) if k in ("maxRetries", "clientsPerRound",
                                                                 "pendingTimeoutSeconds")}
        body = spec(name, namespace, parameters={"fake": fake}, **changes)
        reply = await self.stub.SubmitJob(scheduler_pb2.SubmitJobRequest(namespace=namespace,
                                                                         spec_json=json.dumps(body)))
        return dict(json.loads(reply.job_json))

    async def get(self, name: str, namespace: str = "team-a") -> dict[str, Any]:
        reply = await self.stub.GetJob(scheduler_pb2.JobRef(namespace=namespace, name=name))
        return dict(json.loads(reply.job_json))

    async def wait_state(self, name: str, states: set[str], within: float = 20.0) -> dict[str, Any]:
        """Poll the job until it is in one of ``states``."""
        deadline = asyncio.get_running_loop().time() + within
        job: dict[str, Any] = {}
        while asyncio.get_running_loop().time() < deadline:
            job = await self.get(name)
            if job["state"] in states:
                return job
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {name} still {job.get('state')} ({job.get('reason')}), not in {states}")

    def launches_of(self, name: str) -> int:
        lines = self.launches.read_text().splitlines() if self.launches.exists() else []
        return sum(1 for line in lines if line.split()[0] == f"team-a/{name}")


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_pki: TestPki) -> AsyncIterator[Client]:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    availability = FakeAvailability(clients=2)
    availability.per_job["team-a/lonely"] = 1
    settings = SchedulerSettings(listen="127.0.0.1:0", state_dir=tmp_path / "state", coordinator_module=FAKE,
                                 admission_interval_seconds=0.05, watch_interval_seconds=0.05,
                                 max_running_per_namespace=6, max_running_jobs=6, **scheduler_wire(test_pki))
    app = SchedulerApp(settings, availability=availability)
    port = await app.start()
    api_server = test_pki.wire(test_pki.identity("api-server"))
    channel = api_server.channel(f"127.0.0.1:{port}", api_server.control("scheduler"))
    try:
        yield Client(channel, port, test_pki, tmp_path)
    finally:
        await channel.close()
        await app.stop()
        for pid_file in (tmp_path / "state" / "jobs").glob("*/*/coordinator.pid"):
            pid = json.loads(pid_file.read_text())["pid"]
            try:
                os.killpg(pid, 9)
            except ProcessLookupError:
                pass


async def test_coordinators_end_finished_failed_stopped_or_crash_until_retries_run_out(client: Client) -> None:
    await client.submit("ok", rounds=3, exit=0)
    await client.submit("fails", exit=1)
    await client.submit("stops", holdSeconds=60, rounds=1)
    await client.submit("crashes", exit=9, maxRetries=2, rounds=0)
    running = await client.wait_state("stops", {"RUNNING"})
    while running["status"]["round"] < 1:
        await asyncio.sleep(0.05)
        running = await client.get("stops")
    assert running["coordinator"]["launches"] == 1 and running["state"] == "RUNNING"
    await client.stub.StopJob(scheduler_pb2.JobRef(namespace="team-a", name="stops"))

    ok = await client.wait_state("ok", TERMINAL)
    assert (ok["state"], ok["reason"]) == ("FINISHED", "completed 3 rounds")
    assert ok["status"]["round"] == 3 and ok["status"]["progress"] == 100.0
    assert ok["status"]["lastMetrics"] == {"accuracy": 0.53}
    fails = await client.wait_state("fails", TERMINAL)
    assert (fails["state"], fails["reason"]) == ("FAILED", "fake failure: round 1 had 0/2 updates")
    stops = await client.wait_state("stops", TERMINAL)
    assert (stops["state"], stops["reason"]) == ("STOPPED", "stopped after round 1")
    crashes = await client.wait_state("crashes", TERMINAL)
    assert crashes["state"] == "FAILED"
    assert crashes["reason"].startswith("the coordinator exited with code 9 after 2 relaunches")
    assert "fake coordinator exits with 9" in crashes["reason"]
    assert [client.launches_of(n) for n in ("ok", "fails", "stops", "crashes")] == [1, 1, 1, 3]
    logs = await client.stub.GetJobLogs(scheduler_pb2.JobLogsRequest(
        ref=scheduler_pb2.JobRef(namespace="team-a", name="crashes"), tail_lines=200))
    assert logs.text.count("--- launch") == 3


async def test_a_pending_job_fails_at_its_deadline_while_another_in_its_namespace_runs(client: Client) -> None:
    await client.submit("lonely", clientsPerRound=3, pendingTimeoutSeconds=1)
    await client.submit("busy", holdSeconds=60)
    pending = await client.wait_state("lonely", {"PENDING"})
    assert pending["reason"] == "InsufficientClients 1/3: no client has dataset x"
    await client.wait_state("busy", {"RUNNING"})
    failed = await client.wait_state("lonely", {"FAILED"})
    assert failed["reason"] == "InsufficientClients 1/3: no client has dataset x"
    assert (await client.get("busy"))["state"] == "RUNNING"
    assert client.launches_of("lonely") == 0


async def test_errors_map_to_grpc_statuses(client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.get("ghost")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    await client.submit("dup", holdSeconds=60)
    with pytest.raises(grpc.aio.AioRpcError) as duplicate:
        await client.submit("dup")
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await client.wait_state("dup", {"RUNNING"})
    with pytest.raises(grpc.aio.AioRpcError) as state:
        await client.stub.StartJob(scheduler_pb2.StartJobRequest(ref=scheduler_pb2.JobRef(
            namespace="team-a", name="dup")))
    assert state.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    coordinator = client.pki.wire(client.pki.identity("coordinator", "team-a", "dup"))
    channel, as_coordinator = client.stub_of(coordinator)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as token:
            await as_coordinator.ReportProgress(scheduler_pb2.ProgressReport(
                job_id="team-a/dup", coordinator_token="x", state="RUNNING"))
    assert token.value.code() == grpc.StatusCode.PERMISSION_DENIED, "its own job's coordinator, but not its token"
    assert "token" in (token.value.details() or "")
    listed = await client.stub.ListJobs(scheduler_pb2.ListJobsRequest(namespace="team-a", states=["RUNNING"]))
    assert [json.loads(j)["name"] for j in listed.jobs_json] == ["dup"]
    assert json.loads(listed.jobs_json[0])["version"] >= 1


async def test_only_the_api_server_calls_user_rpcs_and_a_coordinator_reports_only_its_own_job(
    client: Client, other_pki: TestPki
) -> None:
    await client.submit("busy", holdSeconds=60)
    await client.wait_state("busy", {"RUNNING"})
    pki = client.pki
    strangers = (pki.identity("client", "alice"), pki.identity("coordinator", "team-a", "busy"),
                 pki.identity("selector"))
    for who in strangers:
        channel, stub = client.stub_of(pki.wire(who))
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.DeleteJob(scheduler_pb2.JobRef(namespace="team-a", name="busy"),
                                     metadata=(("nsfl-namespaces", "*"),), timeout=5)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, who.uri

    channel, other_job = client.stub_of(pki.wire(pki.identity("coordinator", "team-a", "other")))
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await other_job.ReportProgress(scheduler_pb2.ProgressReport(
                job_id="team-a/busy", coordinator_token="whatever", state="FAILED", reason="forged"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cannot act on job" in (refused.value.details() or "")

    channel, stranger = client.stub_of(other_pki.wire(other_pki.identity("api-server")))
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as handshake:
            await stranger.GetJob(scheduler_pb2.JobRef(namespace="team-a", name="busy"), timeout=5)
    assert handshake.value.code() == grpc.StatusCode.UNAVAILABLE, "another CA's certificate fails the handshake"
    assert (await client.get("busy"))["state"] == "RUNNING", "nothing the refused calls asked for happened"


async def test_an_end_user_sees_and_acts_only_in_their_own_namespaces(client: Client) -> None:
    admin, team_a = client.as_user("*"), client.as_user("team-a,team-c")
    body = json.dumps(spec("theirs", "team-b", parameters={"fake": {"holdSeconds": 60}}))
    await admin.SubmitJob(scheduler_pb2.SubmitJobRequest(namespace="team-b", spec_json=body))
    await client.submit("ours", holdSeconds=60)
    theirs = scheduler_pb2.JobRef(namespace="team-b", name="theirs")

    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await team_a.GetJob(theirs)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await team_a.GetJob(scheduler_pb2.JobRef(namespace="team-b", name="ghost"))
    assert hidden.value.code() == missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert hidden.value.details() == "job team-b/theirs not found", "as if it did not exist"
    for call, request in ((team_a.DeleteJob, theirs), (team_a.StopJob, theirs),
                          (team_a.GetJobLogs, scheduler_pb2.JobLogsRequest(ref=theirs))):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await team_a.ListJobs(scheduler_pb2.ListJobsRequest())
    assert [json.loads(j)["name"] for j in listed.jobs_json] == ["ours"]
    assert list((await team_a.ListJobs(scheduler_pb2.ListJobsRequest(namespace="team-b"))).jobs_json) == []
    everything = await admin.ListJobs(scheduler_pb2.ListJobsRequest())
    assert sorted(json.loads(j)["name"] for j in everything.jobs_json) == ["ours", "theirs"]

    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await team_a.SubmitJob(scheduler_pb2.SubmitJobRequest(namespace="team-b", spec_json=body))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as unscoped:
        await client.as_user(None).GetJob(scheduler_pb2.JobRef(namespace="team-a", name="ours"))
    assert unscoped.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "nsfl-namespaces" in (unscoped.value.details() or "")
    assert json.loads((await admin.GetJob(theirs)).job_json)["state"] != "DELETING", "still there"
