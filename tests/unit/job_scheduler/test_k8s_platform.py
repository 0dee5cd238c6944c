"""The Kubernetes platform against KMock's emulated API over real HTTP: Pods, Services, certificates, and what they mean."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from job_scheduler.coordinator_certificates import CoordinatorIssuer
from job_scheduler.k8s_api import (
    CONFIGMAPS,
    FEDERATED_JOBS,
    PODS,
    SECRETS,
    KubeApi,
    load_credentials,
)
from job_scheduler.k8s_platform import KubernetesPlatform, coordinator_info
from job_scheduler.platform import Launched, LaunchRequest
from job_scheduler.settings import SchedulerSettings
from libs.errors import InvalidSetting, PermissionDenied, Unavailable
from libs.jobspec import JobSpec
from libs.pki.authority import identity_of, utcnow
from tests.fixtures.pki import TestPki
from tests.unit.job_scheduler.fakes import issuer_of, scheduler_wire, spec, stack
from tests.unit.job_scheduler.test_k8s_emulator import (
    ApiServer,
    Kubelet,
    connected,
    federated_job,
    live_objects,
)

pytestmark = pytest.mark.kmock(cls=ApiServer)

NS = "team-a"
POD1, POD2, SERVICE = "nsfl-coord-mnist-r1", "nsfl-coord-mnist-r2", "nsfl-coord-mnist"
TLS_SECRET = "nsfl-coord-mnist-tls"
RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}}
SETTINGS = SchedulerSettings(platform="kubernetes", coordinator_image="nsfl/coordinator:test",
                             selector="nsfl-client-selector.nsfl-system.svc:50051")  # fmt: skip


@pytest.fixture
async def api(kmock: ApiServer) -> AsyncIterator[KubeApi]:
    async with connected(kmock) as client:
        yield client


def platform_of(api: KubeApi, issuer: CoordinatorIssuer | None) -> KubernetesPlatform:
    pod_settings = SETTINGS.coordinator_pod_settings("nsfl-job-scheduler.nsfl-system.svc:50052")
    return KubernetesPlatform(api, image=SETTINGS.coordinator_image, pod_settings=pod_settings,
                              certificates=issuer)  # fmt: skip


@pytest.fixture
def platform(api: KubeApi, test_pki: TestPki) -> KubernetesPlatform:
    return platform_of(api, issuer_of(test_pki))


async def applied(api: KubeApi, name: str = "mnist") -> dict[str, Any]:
    """A FederatedJob as ``kubectl apply`` leaves it."""
    return await api.create(FEDERATED_JOBS, NS, federated_job(name, NS, resources=RESOURCES))


def request(launch: int = 1, token: str = "token-1", name: str = "mnist") -> LaunchRequest:
    return LaunchRequest(
        namespace=NS, name=name, spec=JobSpec.parse(spec(name, NS, resources=RESOURCES)), launch=launch,
        token=token, scheduler_address="10.0.0.5:50052", selector_address="selector.svc:50051",
        store_url="mongodb://user:secret@mongo/nsfl", object_store_url="s3://bucket?endpoint=http://s3:9000",
    )  # fmt: skip


async def test_a_launch_creates_one_pod_and_one_service_owned_and_labelled_with_the_jobs_resources(
    api: KubeApi, platform: KubernetesPlatform, kmock: ApiServer
) -> None:
    owner = await applied(api)
    launched = await platform.launch(request())
    assert launched.name == POD1 and not launched.adopted
    pods, services = live_objects(kmock, "pods", NS), live_objects(kmock, "services", NS)
    assert [p["metadata"]["name"] for p in pods] == [POD1] and [s["metadata"]["name"] for s in services] == [
        SERVICE
    ]
    assert [c["metadata"]["name"] for c in live_objects(kmock, "configmaps", NS)] == [POD1]
    assert [s["metadata"]["name"] for s in live_objects(kmock, "secrets", NS)] == [POD1, TLS_SECRET]
    pod, service = pods[0], services[0]
    for item in (pod, service):
        assert item["metadata"]["ownerReferences"] == [{
            "apiVersion": "nsfl.io/v1alpha1", "kind": "FederatedJob", "name": "mnist",
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]  # fmt: skip
        labels = item["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "nsfl" and labels["app.kubernetes.io/instance"] == "mnist"
        assert labels["app.kubernetes.io/component"] == "coordinator" and labels["nsfl.io/job"] == "mnist"
    container = pod["spec"]["containers"][0]
    assert container["image"] == "nsfl/coordinator:test"
    assert container["resources"] == {
        "requests": {"cpu": "500m", "ephemeral-storage": "1Gi", "memory": "1Gi"},
        "limits": {"cpu": "2", "ephemeral-storage": "4Gi", "memory": "3Gi"},
    }
    assert pod["spec"]["securityContext"]["runAsNonRoot"] and container["securityContext"]["runAsNonRoot"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in container["env"]}
    assert env["NSFL_COORDINATOR_SCHEDULER"]["value"] == "10.0.0.5:50052"
    assert env["NSFL_COORDINATOR_SELECTOR"]["value"] == "selector.svc:50051"
    for variable in (
        "NSFL_COORDINATOR_DOCUMENT_STORE",
        "NSFL_S3_ACCESS_KEY",
        "NSFL_S3_SECRET_KEY",
        "NSFL_COORDINATOR_TOKEN",
    ):
        assert "value" not in env[variable] and env[variable]["valueFrom"]["secretKeyRef"]
    assert "user:secret" not in str(pod) and "token-1" not in str(pod), "no credential in the Pod manifest"
    assert service["metadata"]["annotations"]["nsfl.io/launch"] == "1"
    assert service["spec"]["selector"]["nsfl.io/job"] == "mnist"
    secret = live_objects(kmock, "secrets", NS)[0]
    assert base64.b64decode(secret["data"]["token"]).decode() == "token-1"
    assert "PRIVATE KEY" not in str(pod) and "BEGIN CERTIFICATE" not in str(pod), "the certificate too"


async def test_launching_the_same_launch_again_adopts_its_pod_and_creates_nothing(
    api: KubeApi, platform: KubernetesPlatform, kmock: ApiServer
) -> None:
    await applied(api)
    await platform.launch(request())
    again = await platform.launch(request(token="token-2"))
    assert again.adopted
    assert len(live_objects(kmock, "pods", NS)) == 1 and len(live_objects(kmock, "services", NS)) == 1
    creates = [r for r in kmock if r.method == "POST" and r.url.path.endswith("/pods")]
    assert len(creates) == 1


async def test_a_retried_launch_whose_pod_never_started_replaces_its_token_secret(
    api: KubeApi, platform: KubernetesPlatform
) -> None:
    await applied(api)
    stale = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": POD1, "namespace": NS},
             "data": {"token": base64.b64encode(b"stale").decode()}}  # fmt: skip
    await api.create(SECRETS, NS, stale)
    await platform.launch(request(token="fresh"))
    assert await Kubelet(api).token(NS, POD1) == "fresh"


async def test_a_launch_waits_for_its_federatedjob(platform: KubernetesPlatform) -> None:
    with pytest.raises(Unavailable, match="does not exist yet"):
        await platform.launch(request())


async def test_find_follows_the_pod_from_pending_to_its_exit(
    api: KubeApi, platform: KubernetesPlatform
) -> None:
    kubelet = Kubelet(api)
    await applied(api)
    assert await platform.find(NS, "mnist") is None
    await platform.launch(request())
    info = await platform.find(NS, "mnist")
    assert info is not None and info.running and info.launch == 1 and info.status["state"] == "STARTING"
    assert info.endpoint == "nsfl-coord-mnist.team-a.svc:50053"
    await kubelet.running(NS, POD1)
    info = await platform.find(NS, "mnist")
    assert info is not None and info.running and info.status["state"] == "RUNNING"
    await kubelet.terminated(NS, POD1, 0)
    info = await platform.find(NS, "mnist")
    assert info is not None and not info.running and info.exit_code == 0


@pytest.mark.parametrize(
    ("pod_status", "exit_code", "platform_reason"),
    [
        ({"phase": "Failed", "containerStatuses": [{"name": "coordinator", "state": {"terminated": {
            "exitCode": 137, "reason": "OOMKilled"}}}]}, 137, "OOMKilled"),
        ({"phase": "Failed", "reason": "Evicted", "message": "low on memory", "containerStatuses": [
            {"name": "coordinator", "state": {"terminated": {"exitCode": 3}}}]}, None, "Evicted: low on memory"),
        ({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}, None, "Evicted: low on memory"),
        ({"phase": "Failed", "containerStatuses": [{"name": "coordinator", "state": {"terminated": {
            "exitCode": 2, "reason": "Error"}}}]}, 2, ""),
        ({"phase": "Failed", "containerStatuses": [{"name": "coordinator", "state": {"terminated": {
            "exitCode": 3, "reason": "Error"}}}]}, 3, ""),
    ],
)  # fmt: skip
def test_an_ended_pod_gives_the_contract_exit_code_and_why_the_platform_ended_it(
    pod_status: dict[str, Any], exit_code: int | None, platform_reason: str
) -> None:
    info = coordinator_info({"status": pod_status}, name=POD1, launch=1, endpoint="x:1")
    assert not info.running and info.exit_code == exit_code and info.platform_reason == platform_reason


async def test_a_vanished_pod_is_a_crash_of_its_launch(api: KubeApi, platform: KubernetesPlatform) -> None:
    await applied(api)
    await platform.launch(request())
    await api.delete(PODS, NS, POD1, grace_seconds=0)
    info = await platform.find(NS, "mnist")
    assert info is not None and info.launch == 1 and not info.running and info.exit_code is None
    assert info.platform_reason == "PodNotFound"


async def test_a_pod_that_can_never_start_fails_and_is_deleted_so_it_never_starts_later(
    api: KubeApi, platform: KubernetesPlatform, kmock: ApiServer
) -> None:
    await applied(api)
    await platform.launch(request())
    waiting = {"phase": "Pending", "containerStatuses": [{"name": "coordinator", "state": {"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "nsfl-s3" not found'}}}]}  # fmt: skip
    await api.patch(PODS, NS, POD1, {"status": waiting}, subresource="status")
    info = await platform.find(NS, "mnist")
    assert info is not None and not info.running and info.exit_code == 1
    assert info.status["reason"] == 'CreateContainerConfigError: secret "nsfl-s3" not found'
    assert live_objects(kmock, "pods", NS) == []


async def test_stop_deletes_the_pod_with_its_grace_period_and_kill_without(
    api: KubeApi, platform: KubernetesPlatform, kmock: ApiServer
) -> None:
    kubelet = Kubelet(api)
    await applied(api)
    assert not await platform.stop(NS, "mnist")
    await platform.launch(request())
    await kubelet.running(NS, POD1)
    assert await platform.stop(NS, "mnist")
    terminating = await kubelet.pod(NS, POD1)
    assert terminating["metadata"]["deletionTimestamp"], "SIGTERM: the coordinator checkpoints first"
    info = await platform.find(NS, "mnist")
    assert info is not None and info.running, "a terminating coordinator still runs"
    await kubelet.terminated(NS, POD1, 3)
    info = await platform.find(NS, "mnist")
    assert info is not None and not info.running
    await platform.launch(request(launch=2))
    assert await platform.kill(NS, "mnist")
    assert [p["metadata"]["name"] for p in live_objects(kmock, "pods", NS)] == []


async def test_remove_deletes_every_coordinator_object_of_the_job_and_nothing_else(
    api: KubeApi, platform: KubernetesPlatform, kmock: ApiServer
) -> None:
    await applied(api)
    await applied(api, "other")
    await platform.launch(request())
    await platform.launch(request(launch=2))
    await platform.launch(request(name="other"))
    await platform.remove(NS, "mnist")
    for plural in ("pods", "configmaps"):
        assert [o["metadata"]["name"] for o in live_objects(kmock, plural, NS)] == ["nsfl-coord-other-r1"]
    assert [o["metadata"]["name"] for o in live_objects(kmock, "secrets", NS)] == [
        "nsfl-coord-other-r1", "nsfl-coord-other-tls"]  # fmt: skip
    assert [o["metadata"]["name"] for o in live_objects(kmock, "services", NS)] == ["nsfl-coord-other"]
    assert len(live_objects(kmock, "federatedjobs", NS)) == 2, "the FederatedJob is not the platform's"


async def test_logs_are_the_last_lines_of_every_launch(
    api: KubeApi, platform: KubernetesPlatform, kmock: ApiServer
) -> None:
    await applied(api)
    await platform.launch(request())
    await platform.launch(request(launch=2))
    kmock[f"get /api/v1/namespaces/{NS}/pods/{POD1}/log"] << b"r1 a\nr1 b\n"
    kmock[f"get /api/v1/namespaces/{NS}/pods/{POD2}/log"] << b"r2 a\nr2 b\n"
    assert await platform.logs(NS, "mnist", 4) == f"r1 b\n--- launch 2 ({POD2}) ---\nr2 a\nr2 b"


async def test_a_namespace_without_the_schedulers_rolebinding_is_permission_denied(
    api: KubeApi, platform: KubernetesPlatform, kmock: ApiServer
) -> None:
    await applied(api)
    forbidden = {"kind": "Status", "reason": "Forbidden", "message": "services is forbidden"}
    kmock[f"post /api/v1/namespaces/{NS}/services"] << 403 << forbidden
    with pytest.raises(PermissionDenied, match="services is forbidden"):
        await platform.launch(request())
    assert await api.try_get(CONFIGMAPS, NS, POD1) is None, "nothing after the refusal"


def test_the_kubernetes_platform_needs_a_coordinator_image_and_valid_pod_settings(test_pki: TestPki) -> None:
    wire = scheduler_wire(test_pki)
    SchedulerSettings(platform="kubernetes", coordinator_image="img", **wire).validate()
    with pytest.raises(InvalidSetting, match="coordinator_image"):
        SchedulerSettings(platform="kubernetes", **wire).validate()
    with pytest.raises(InvalidSetting, match="service_type"):
        SchedulerSettings(platform="kubernetes", coordinator_image="img",
                          coordinator_service_type="Ingress", **wire).validate()  # fmt: skip
    with pytest.raises(InvalidSetting, match="advertise_host_template"):
        SchedulerSettings(platform="kubernetes", coordinator_image="img",
                          coordinator_advertise_host_template="{pod}.example.com", **wire).validate()  # fmt: skip


def test_explicit_credentials_win_and_never_show_their_token() -> None:
    credentials = load_credentials(server="http://127.0.0.1:1/", token="s3cr3t", insecure=True)
    assert credentials.server == "http://127.0.0.1:1" and credentials.current_token() == "s3cr3t"
    assert "s3cr3t" not in repr(credentials) and "s3cr3t" not in repr(
        SchedulerSettings(kube_api_token="s3cr3t")
    )


async def test_an_unreachable_api_server_delays_a_launch_and_never_fails_the_job(tmp_path: Path) -> None:
    async with stack(tmp_path) as jobs:
        launch = jobs.platform.launch
        calls = 0

        async def flaky(launch_request: LaunchRequest) -> Launched:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise Unavailable("Kubernetes API: POST /api/v1/namespaces/team-a/pods: ClientConnectorError")
            return await launch(launch_request)

        jobs.platform.launch = flaky
        await jobs.submit("mnist")
        await jobs.supervisor.admit_once()
        assert (
            await jobs.state("team-a/mnist") == "STARTING" and jobs.platform.launches_of("team-a/mnist") == 0
        )
        await jobs.supervisor.watch_once()  # launch 1 is persisted but not on the platform: launched now
        assert (
            await jobs.state("team-a/mnist") == "STARTING" and jobs.platform.launches_of("team-a/mnist") == 1
        )
        assert (await jobs.job("team-a/mnist"))["coordinator"]["launches"] == 1


async def test_each_launch_gets_a_certificate_of_exactly_its_job_in_a_secret_mounted_read_only(
    api: KubeApi, platform: KubernetesPlatform, kmock: ApiServer, test_pki: TestPki
) -> None:
    owner = await applied(api)
    await platform.launch(request())
    secret = next(s for s in live_objects(kmock, "secrets", NS) if s["metadata"]["name"] == TLS_SECRET)
    assert secret["type"] == "kubernetes.io/tls" and sorted(secret["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    assert base64.b64decode(secret["data"]["ca.crt"]) == test_pki.directory.ca.read_bytes()
    first = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert identity_of(first).uri == "spiffe://nsfl.local/coordinator/team-a/mnist"
    names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)  # fmt: skip
    assert names == ["mnist.team-a.coordinator.nsfl.local", "nsfl-coord-mnist.team-a.svc"], "and its advertised host"
    rounds, timeout = request().spec.rounds, request().spec.round_timeout_seconds
    lifetime = dt.timedelta(seconds=rounds * timeout, days=1)
    assert abs(first.not_valid_after_utc - (utcnow() + lifetime)) < dt.timedelta(minutes=2)

    pod = live_objects(kmock, "pods", NS)[0]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["tls"]["secret"] == {"secretName": TLS_SECRET, "defaultMode": 0o400}
    assert volumes["crl"]["configMap"]["name"] == "nsfl-crl" and volumes["crl"]["configMap"]["optional"] is True
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/nsfl/tls", "readOnly": True}
    assert mounts["crl"]["mountPath"] == "/etc/nsfl/crl" and mounts["crl"]["readOnly"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert {k: v for k, v in env.items() if "TLS" in k or "TRUST" in k or "INSECURE" in k} == {
        "NSFL_COORDINATOR_TLS_CA": "/etc/nsfl/tls/ca.crt", "NSFL_COORDINATOR_TLS_CERT": "/etc/nsfl/tls/tls.crt",
        "NSFL_COORDINATOR_TLS_KEY": "/etc/nsfl/tls/tls.key", "NSFL_COORDINATOR_TLS_CRL": "/etc/nsfl/crl/crl.pem",
        "NSFL_COORDINATOR_TRUST_DOMAIN": "nsfl.local"}  # fmt: skip

    await Kubelet(api).terminated(NS, POD1, 137)
    await platform.launch(request(launch=2))
    secret = await api.get(SECRETS, NS, TLS_SECRET)
    second = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert second.serial_number != first.serial_number, "a relaunch gets a fresh certificate"
    assert secret["metadata"]["annotations"]["nsfl.io/launch"] == "2"


async def test_a_certificate_secret_that_already_exists_does_not_fail_the_launch(
    api: KubeApi, platform: KubernetesPlatform
) -> None:
    await applied(api)
    stale = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": TLS_SECRET, "namespace": NS},
             "data": {"tls.crt": base64.b64encode(b"stale").decode()}}  # fmt: skip
    await api.create(SECRETS, NS, stale)
    assert not (await platform.launch(request())).adopted
    secret = await api.get(SECRETS, NS, TLS_SECRET)
    assert base64.b64decode(secret["data"]["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE")


async def test_an_insecure_schedulers_coordinator_is_told_plaintext_and_gets_no_certificate(
    api: KubeApi, kmock: ApiServer
) -> None:
    await applied(api)
    await platform_of(api, None).launch(request())
    assert [s["metadata"]["name"] for s in live_objects(kmock, "secrets", NS)] == [POD1]
    container = live_objects(kmock, "pods", NS)[0]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NSFL_COORDINATOR_INSECURE"] == "true" and "NSFL_COORDINATOR_TLS_CERT" not in env
    assert all(m["name"] != "tls" for m in container["volumeMounts"])
