"""The scheduler in Kubernetes mode, kopf operator included, against KMock's emulated API over real HTTP.

Everything is real but the cluster: the scheduler (store, supervisor,
gRPC server), the kopf operator, the FederatedJob mirror and the Kubernetes
platform run in this process against :class:`ApiServer`; the test plays
``kubectl`` (creating, patching and deleting FederatedJobs), the kubelet
(:class:`Kubelet`: Pod phases) and the coordinator (its progress reports,
with the token its Pod reads from its Secret).  Only the client selector's
answer is a fake.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from job_scheduler.app import SchedulerApp
from job_scheduler.coordinators import Report
from job_scheduler.k8s_api import FEDERATED_JOBS, KubeApi
from job_scheduler.k8s_mirror import CREATED_AT_ANNOTATION
from job_scheduler.k8s_operator import FINALIZER
from job_scheduler.service import JobService
from job_scheduler.settings import SchedulerSettings
from libs.errors import NotFound
from libs.protos import scheduler_pb2, scheduler_pb2_grpc
from libs.store import open_document_store
from tests.fixtures.pki import TestPki
from tests.unit.job_scheduler.fakes import FakeAvailability, scheduler_wire, spec
from tests.unit.job_scheduler.test_k8s_emulator import (
    ApiServer,
    Kubelet,
    connected,
    federated_job,
    live_objects,
)

pytestmark = pytest.mark.kmock(cls=ApiServer)

NS = "team-a"
POD1, POD2, POD3 = "nsfl-coord-mnist-r1", "nsfl-coord-mnist-r2", "nsfl-coord-mnist-r3"
RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}}
RECORD = {
    "round": 1,
    "accepted": ["c1", "c2"],
    "trainMetrics": {"loss": 0.5},
    "evaluation": {"accuracy": 0.75},
}


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = 8.0) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Cluster:
    """The emulated API, the scheduler in Kubernetes mode, and the parts the test plays."""

    def __init__(self, server: ApiServer, api: KubeApi, tmp_path: Path, pki: TestPki) -> None:
        self.server, self.api, self.kubelet = server, api, Kubelet(api)
        self.availability = FakeAvailability(clients=10)
        self.store_url = f"sqlite://{tmp_path / 'state' / 'nsfl.db'}"
        self.settings = SchedulerSettings(
            listen="127.0.0.1:0", state_dir=tmp_path / "state", platform="kubernetes",
            coordinator_image="nsfl/coordinator:test", kube_api_url=str(server.url), kube_api_token="test",
            admission_interval_seconds=0.05, watch_interval_seconds=0.05, status_resync_seconds=30.0,
            **scheduler_wire(pki),
        )  # fmt: skip
        self.pki = pki
        self.app: SchedulerApp | None = None

    async def start(self) -> None:
        self.app = SchedulerApp(self.settings, availability=self.availability)
        await self.app.start()

    async def stop(self) -> None:
        if self.app is not None:
            await self.app.stop()
            self.app = None

    @property
    def service(self) -> JobService:
        assert self.app is not None and self.app.service is not None
        return self.app.service

    # --- kubectl ----------------------------------------------------------------------------------

    async def apply(self, name: str = "mnist", **changes: Any) -> dict[str, Any]:
        return await self.api.create(
            FEDERATED_JOBS, NS, federated_job(name, NS, resources=RESOURCES, **changes)
        )

    async def fljob(self, name: str = "mnist") -> dict[str, Any] | None:
        return await self.api.try_get(FEDERATED_JOBS, NS, name)

    async def status(self, name: str = "mnist") -> dict[str, Any]:
        found = await self.fljob(name)
        return dict((found or {}).get("status") or {})

    async def state_is(self, state: str, name: str = "mnist") -> dict[str, Any] | None:
        status = await self.status(name)
        return status if status.get("state") == state else None

    # --- the scheduler's store ---------------------------------------------------------------------

    async def job(self, name: str = "mnist") -> dict[str, Any] | None:
        try:
            return (await self.service.get(NS, name)).data
        except NotFound:
            return None

    # --- the coordinator -------------------------------------------------------------------------

    async def report(self, pod: str, state: str = "RUNNING", *, round_number: int = 0,
                     record: dict[str, Any] | None = None, checkpoint: dict[str, Any] | None = None,
                     reason: str = "") -> None:  # fmt: skip
        token = await self.kubelet.token(NS, pod)
        await self.service.report_progress(Report(
            job_id=f"{NS}/mnist", token=token, state=state, reason=reason, round=round_number, rounds=2,
            round_record=record, checkpoint=checkpoint))  # fmt: skip

    async def save_checkpoint(self, round_number: int) -> dict[str, Any]:
        """What the coordinator's checkpoint store writes (a record in the shared store), then reports."""
        record = {"jobId": f"{NS}/mnist", "namespace": NS, "job": "mnist", "round": round_number,
                  "key": f"{NS}/checkpoints/mnist/round-{round_number:06d}.ckpt", "sha256": "ab" * 32,
                  "size": 10}  # fmt: skip
        documents = await open_document_store(self.store_url)
        try:
            await documents.upsert("checkpoints", f"{NS}/mnist#{round_number:06d}", record)
        finally:
            await documents.close()
        return record

    def writes(self, name: str = "mnist") -> int:
        """API writes so far that touch the FederatedJob ``name`` (patches, deletes)."""
        path = f"/namespaces/{NS}/federatedjobs/{name}"
        return sum(1 for r in self.server if r.method in ("PATCH", "DELETE") and path in r.url.path)

    async def assert_settles(self, name: str = "mnist") -> None:
        """The object's writes stop (kopf's own bookkeeping included) and stay stopped: no loop."""

        async def quiet() -> tuple[int] | None:
            before = self.writes(name)
            await asyncio.sleep(0.3)
            return (before,) if self.writes(name) == before else None

        (settled,) = await eventually(quiet, f"the writes to {name} to stop")
        await asyncio.sleep(1.0)
        assert self.writes(name) == settled, f"{name} keeps being written"


@pytest.fixture
async def cluster(kmock: ApiServer, tmp_path: Path, test_pki: TestPki) -> AsyncIterator[Cluster]:
    before = asyncio.all_tasks()
    async with connected(kmock) as api:
        made = Cluster(kmock, api, tmp_path, test_pki)
        await made.start()
        try:
            yield made
        finally:
            await made.stop()
    await asyncio.sleep(0.05)  # let the emulator's side of closed connections finish
    leaked = [
        t
        for t in asyncio.all_tasks() - before - {asyncio.current_task()}
        if not t.done() and "RequestHandler" not in repr(t)
    ]
    assert leaked == [], f"tasks left running: {leaked}"


async def test_applying_a_federatedjob_creates_exactly_one_coordinator_pod_and_service(
    cluster: Cluster,
) -> None:
    owner = await cluster.apply()
    await eventually(lambda: _exists(cluster, "pods", POD1), "the coordinator pod")
    await asyncio.sleep(0.5)  # a few more watch and admission passes: nothing more appears
    pods, services = live_objects(cluster.server, "pods", NS), live_objects(cluster.server, "services", NS)
    assert [p["metadata"]["name"] for p in pods] == [POD1]
    assert [s["metadata"]["name"] for s in services] == ["nsfl-coord-mnist"]
    uid = owner["metadata"]["uid"]
    for item in (pods[0], services[0]):
        (reference,) = item["metadata"]["ownerReferences"]
        assert reference["uid"] == uid and reference["kind"] == "FederatedJob" and reference["controller"]
        assert item["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "nsfl-job-scheduler"
        assert item["metadata"]["labels"]["app.kubernetes.io/instance"] == "mnist"
    resources = pods[0]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["memory"] == "1Gi" and resources["limits"]["cpu"] == "2"
    assert pods[0]["spec"]["securityContext"]["runAsNonRoot"] is True
    fljob = await cluster.fljob()
    assert fljob is not None and FINALIZER in fljob["metadata"]["finalizers"]
    assert fljob["status"]["state"] == "STARTING" and fljob["status"]["observedGeneration"] == 1
    job = await cluster.job()
    assert job is not None and job["resourceUid"] == uid and job["spec"]["resources"] == RESOURCES
    assert job["coordinator"]["name"] == POD1 and fljob["status"]["coordinator"]["name"] == POD1


async def test_pod_phases_drive_the_job_through_running_to_finished_and_the_status_follows(
    cluster: Cluster,
) -> None:
    await cluster.apply()
    await eventually(lambda: _exists(cluster, "pods", POD1), "the coordinator pod")
    await cluster.kubelet.running(NS, POD1)
    await eventually(lambda: cluster.state_is("RUNNING"), "RUNNING")
    checkpoint = await cluster.save_checkpoint(1)
    await cluster.report(POD1, round_number=1, record=RECORD, checkpoint=checkpoint)
    status = await eventually(lambda: _round(cluster, 1), "round 1 in the status")
    assert status["roundText"] == "1/2" and status["progress"] == "50%"
    assert status["participants"] == ["c1", "c2"] and status["lastMetrics"] == {"accuracy": 0.75}
    assert status["checkpoints"] == [{"round": 1, "key": checkpoint["key"], "sha256": checkpoint["sha256"]}]
    await cluster.kubelet.terminated(NS, POD1, 0)
    status = await eventually(lambda: cluster.state_is("FINISHED"), "FINISHED")
    assert status["endedAt"] and status["reason"] == "completed"
    assert (await cluster.job() or {})["state"] == "FINISHED"
    await cluster.assert_settles()  # nothing keeps writing once the job has ended: no update loop


async def test_a_failed_pod_is_relaunched_from_its_checkpoint_then_fails_the_job_after_the_retry_limit(
    cluster: Cluster,
) -> None:
    for pod in (POD1, POD2):
        (
            cluster.server[f"get /api/v1/namespaces/{NS}/pods/{pod}/log"]
            << f"{pod}: loading checkpoint\n".encode()
        )
    await cluster.apply(maxRetries=1)
    await eventually(lambda: _exists(cluster, "pods", POD1), "launch 1")
    await cluster.kubelet.running(NS, POD1)
    await eventually(lambda: cluster.state_is("RUNNING"), "RUNNING")
    checkpoint = await cluster.save_checkpoint(1)
    await cluster.report(POD1, round_number=1, record=RECORD, checkpoint=checkpoint)
    await eventually(lambda: _round(cluster, 1), "round 1")
    await cluster.kubelet.terminated(NS, POD1, 137, reason="OOMKilled")
    await eventually(lambda: _exists(cluster, "pods", POD2), "launch 2")
    job = await cluster.job()
    assert job is not None and job["coordinator"]["restarts"] == 1 and job["state"] == "STARTING"
    assert "OOMKilled" in job["reason"] and "relaunch 1 of 1" in job["reason"]
    assert await cluster.kubelet.token(NS, POD2) != await cluster.kubelet.token(NS, POD1)
    status = await cluster.status()
    assert status["checkpoints"][0]["round"] == 1, "the relaunch resumes from the checkpoint it keeps"
    assert status["coordinator"]["restarts"] == 1 and status["coordinator"]["launches"] == 2
    await cluster.kubelet.running(NS, POD2)
    await cluster.kubelet.evicted(NS, POD2)
    status = await eventually(lambda: cluster.state_is("FAILED"), "FAILED")
    assert "Evicted: The node was low on resource: memory." in status["reason"]
    assert "after 1 relaunches" in status["reason"] and "loading checkpoint" in status["reason"]
    await asyncio.sleep(0.3)
    assert not await _exists(cluster, "pods", POD3), "no launch beyond the retry limit"


async def test_deleting_the_federatedjob_stops_the_job_cleans_up_and_releases_the_finalizer(
    cluster: Cluster,
) -> None:
    await cluster.apply()
    await eventually(lambda: _exists(cluster, "pods", POD1), "the coordinator pod")
    await cluster.kubelet.running(NS, POD1)
    await eventually(lambda: cluster.state_is("RUNNING"), "RUNNING")
    await cluster.api.delete(FEDERATED_JOBS, NS, "mnist")
    pod = await eventually(lambda: _terminating(cluster, POD1), "SIGTERM to the coordinator")
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 120
    assert (await cluster.job() or {})["state"] == "STOPPING"
    assert await cluster.fljob() is not None, "the finalizer holds the object while the job stops"
    await cluster.report(POD1, "STOPPED", reason="stopped after round 0")  # checkpointed, then exits 3
    await cluster.kubelet.terminated(NS, POD1, 3)
    await eventually(lambda: _gone(cluster.fljob()), "the FederatedJob to go", within=15)
    assert await cluster.job() is None
    for plural in ("pods", "services", "configmaps", "secrets", "federatedjobs"):
        assert live_objects(cluster.server, plural, NS) == [], plural


async def test_restarting_the_scheduler_mid_job_creates_nothing_twice(cluster: Cluster) -> None:
    await cluster.apply()
    await eventually(lambda: _exists(cluster, "pods", POD1), "the coordinator pod")
    await cluster.kubelet.running(NS, POD1)
    await eventually(lambda: cluster.state_is("RUNNING"), "RUNNING")
    await cluster.stop()
    await cluster.start()
    await asyncio.sleep(1.0)  # resume handlers, recovery, several watch passes
    for plural in ("pods", "services", "configmaps", "federatedjobs"):
        assert len(live_objects(cluster.server, plural, NS)) == 1, plural
    secrets = [s["metadata"]["name"] for s in live_objects(cluster.server, "secrets", NS)]
    assert sorted(secrets) == [POD1, "nsfl-coord-mnist-tls"], "its token and its certificate, once each"
    creates = [r for r in cluster.server if r.method == "POST" and "/namespaces/team-a/" in r.url.path]
    assert sorted(r.url.path.rsplit("/", 1)[-1] for r in creates) == [
        "configmaps", "federatedjobs", "pods", "secrets", "secrets", "services"]  # fmt: skip
    job = await cluster.job()
    assert job is not None and job["state"] == "RUNNING" and job["coordinator"]["launches"] == 1
    await cluster.report(POD1, round_number=1, record=RECORD)  # the coordinator's token still holds
    await eventually(lambda: _round(cluster, 1), "round 1 reported to the new scheduler")
    await cluster.kubelet.terminated(NS, POD1, 0)
    await eventually(lambda: cluster.state_is("FINISHED"), "FINISHED")


async def test_an_invalid_spec_ends_in_a_clear_status_message_without_a_retry_storm(cluster: Cluster) -> None:
    invalid = federated_job("bad", NS, rounds=0)
    del invalid["spec"]["taskEntry"]  # the CRD's schema cannot say "exactly one of taskEntry or scripts"
    await cluster.api.create(FEDERATED_JOBS, NS, invalid)
    status = await eventually(lambda: cluster.state_is("FAILED", "bad"), "the refusal in .status")
    assert status["reason"].startswith("InvalidSpec: spec: set exactly one of taskEntry")
    assert "spec.rounds: must be between 1 and 100000, got 0" in status["specError"]["message"]
    assert status["specError"]["generation"] == 1
    assert await cluster.job("bad") is None
    await cluster.assert_settles("bad")  # a permanent error is not retried
    assert live_objects(cluster.server, "pods", NS) == []
    await cluster.api.patch(FEDERATED_JOBS, NS, "bad", {"spec": {"taskEntry": "train", "rounds": 2}})
    await eventually(lambda: _exists(cluster, "pods", "nsfl-coord-bad-r1"), "the fixed job's coordinator")
    status = await eventually(lambda: cluster.state_is("STARTING", "bad"), "the fixed job's status")
    assert status.get("specError") is None and status["observedGeneration"] == 2


async def test_a_spec_change_follows_rest_rules_applied_while_waiting_refused_while_running(
    cluster: Cluster,
) -> None:
    cluster.availability.per_job[f"{NS}/waiting"] = 0
    await cluster.apply("waiting")
    await eventually(lambda: cluster.state_is("PENDING", "waiting"), "PENDING")
    await cluster.api.patch(FEDERATED_JOBS, NS, "waiting", {"spec": {"rounds": 7}})
    await eventually(lambda: _stored_rounds(cluster, "waiting", 7), "the change in the store")
    status = await eventually(lambda: _observed(cluster, "waiting", 2), "observedGeneration 2")
    assert status.get("specError") is None

    await cluster.apply()
    await eventually(lambda: _exists(cluster, "pods", POD1), "the coordinator pod")
    await cluster.kubelet.running(NS, POD1)
    await eventually(lambda: cluster.state_is("RUNNING"), "RUNNING")
    await cluster.api.patch(FEDERATED_JOBS, NS, "mnist", {"spec": {"rounds": 9}})
    status = await eventually(lambda: _spec_error(cluster, "mnist"), "the refusal")
    assert "cannot update job in state RUNNING" in status["specError"]["message"]
    assert status["state"] == "RUNNING" and status["observedGeneration"] == 1
    assert (await cluster.job() or {})["spec"]["rounds"] == 2, "the job runs what it was given"
    fljob = await cluster.fljob()
    assert fljob is not None and fljob["spec"]["rounds"] == 9, "the user's request is not reverted"


async def test_a_job_submitted_over_rest_appears_as_a_federatedjob_that_follows_it(cluster: Cluster) -> None:
    cluster.availability.per_job[f"{NS}/rest"] = 0
    assert cluster.app is not None and cluster.app.port
    api_server = cluster.pki.wire(cluster.pki.identity("api-server"))
    channel = api_server.channel(f"127.0.0.1:{cluster.app.port}", api_server.control("scheduler"))
    user = (("nsfl-namespaces", NS),)  # the end user's namespaces, as the API server passes them
    try:
        stub = scheduler_pb2_grpc.JobControlStub(channel)
        body = json.dumps(spec("rest", NS, rounds=3))
        await stub.SubmitJob(scheduler_pb2.SubmitJobRequest(namespace=NS, spec_json=body), metadata=user)
        fljob = await eventually(lambda: cluster.fljob("rest"), "the FederatedJob of a REST job")
        stored = await cluster.job("rest")
        assert stored is not None and fljob["spec"]["rounds"] == 3 and fljob["spec"]["taskEntry"] == "train"
        assert fljob["metadata"]["annotations"][CREATED_AT_ANNOTATION] == repr(stored["createdAt"])
        await eventually(lambda: cluster.state_is("PENDING", "rest"), "its status")
        await eventually(lambda: _finalized(cluster, "rest"), "the operator's finalizer")
        version = (await cluster.service.get(NS, "rest")).version

        updated = json.dumps(spec("rest", NS, rounds=5))
        await stub.UpdateJob(scheduler_pb2.UpdateJobRequest(ref=scheduler_pb2.JobRef(namespace=NS, name="rest"),
                                                            spec_json=updated), metadata=user)  # fmt: skip
        fljob = await eventually(lambda: _fljob_rounds(cluster, "rest", 5), "the REST update in the object")
        await eventually(lambda: _observed(cluster, "rest", fljob["metadata"]["generation"]), "observed")
        await asyncio.sleep(0.5)
        assert (await cluster.service.get(NS, "rest")).version == version + 1, "the operator changed nothing"

        await stub.DeleteJob(scheduler_pb2.JobRef(namespace=NS, name="rest"), metadata=user)
        await eventually(lambda: _gone(cluster.fljob("rest")), "the FederatedJob of the deleted job")
        assert await cluster.job("rest") is None
    finally:
        await channel.close()


async def test_the_scheduler_stops_when_its_operator_ends_unasked(
    kmock: ApiServer, tmp_path: Path, test_pki: TestPki
) -> None:
    stopped = asyncio.Event()
    async with connected(kmock) as api:
        settings = Cluster(kmock, api, tmp_path, test_pki).settings
        app = SchedulerApp(settings, availability=FakeAvailability(0), on_operator_exit=stopped.set)
        await app.start()
        try:
            await api.create(FEDERATED_JOBS, NS, federated_job("mnist", NS))
            await eventually(lambda: _status_of(api, "mnist"), "the operator at work")
            assert app.operator is not None
            app.operator.request_stop()  # kopf ends without the scheduler asking
            await asyncio.wait_for(stopped.wait(), 10)
        finally:
            await app.stop()


# --- small checks --------------------------------------------------------------------------------


async def _status_of(api: KubeApi, name: str) -> dict[str, Any] | None:
    return ((await api.try_get(FEDERATED_JOBS, NS, name)) or {}).get("status")


async def _exists(cluster: Cluster, plural: str, name: str) -> bool:
    return any(item["metadata"]["name"] == name for item in live_objects(cluster.server, plural, NS))


async def _terminating(cluster: Cluster, pod: str) -> dict[str, Any] | None:
    found = await cluster.kubelet.pod(NS, pod)
    return found if found["metadata"].get("deletionTimestamp") else None


async def _gone(found: Awaitable[dict[str, Any] | None]) -> bool:
    return await found is None


async def _round(cluster: Cluster, round_number: int) -> dict[str, Any] | None:
    status = await cluster.status()
    return status if status.get("round") == round_number else None


async def _stored_rounds(cluster: Cluster, name: str, rounds: int) -> bool:
    return ((await cluster.job(name)) or {}).get("spec", {}).get("rounds") == rounds


async def _observed(cluster: Cluster, name: str, generation: int) -> dict[str, Any] | None:
    status = await cluster.status(name)
    return status if status.get("observedGeneration") == generation else None


async def _spec_error(cluster: Cluster, name: str) -> dict[str, Any] | None:
    status = await cluster.status(name)
    return status if status.get("specError") else None


async def _finalized(cluster: Cluster, name: str) -> bool:
    return FINALIZER in (((await cluster.fljob(name)) or {}).get("metadata", {}).get("finalizers") or [])


async def _fljob_rounds(cluster: Cluster, name: str, rounds: int) -> dict[str, Any] | None:
    found = await cluster.fljob(name)
    return found if found and found["spec"].get("rounds") == rounds else None
