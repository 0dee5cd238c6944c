"""The coordinator's Pod, Service, ConfigMap and Secret, as built (pure) and as Kubernetes would take them."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from typing import Any

import pytest

from coordinator.settings import CoordinatorSettings
from libs.errors import InvalidSetting, ValidationFailed
from libs.jobspec import JobSpec, validate_spec
from libs.jobspec.spec import CoordinatorResources
from libs.k8s import (
    CoordinatorPodSettings,
    OwnerRef,
    coordinator_configmap,
    coordinator_objects,
    coordinator_pod,
    coordinator_resources,
    coordinator_secret,
    coordinator_service,
)
from libs.objects.store_urls import parse_s3_url
from tests.unit.libs.k8s.kube_schemas import kubernetes_problems

OWNER = OwnerRef(apiVersion="nsfl.io/v1alpha1", kind="FederatedJob", name="digits", uid="0b5c-uid")
SETTINGS = CoordinatorPodSettings()
IMAGE = "registry.example.com/nsfl/coordinator:0.1.0"
TOKEN = "launch-token-that-is-secret"


def document(**fields: Any) -> dict[str, Any]:
    spec = {"name": "digits", "namespace": "team-a", "runtime": "pytorch", "taskEntry": "digits-pytorch",
            "datasets": ["digits"], "rounds": 5, "clientsPerRound": 3, "minClients": 2, **fields}  # fmt: skip
    return validate_spec(spec)


def job(**fields: Any) -> JobSpec:
    return JobSpec.from_document(document(**fields))


def resources(
    requests: dict[str, str] | None = None, limits: dict[str, str] | None = None
) -> CoordinatorResources:
    return CoordinatorResources(requests=requests or {}, limits=limits or {})


def objects(spec: JobSpec | None = None, launch: int = 1, **settings: Any) -> list[Any]:
    chosen = dataclasses.replace(SETTINGS, **settings)
    return list(
        coordinator_objects(
            spec or job(), owner=OWNER, image=IMAGE, settings=chosen, launch=launch, token=TOKEN
        )
    )


def pod(spec: JobSpec | None = None, **settings: Any) -> dict[str, Any]:
    return dict(objects(spec, **settings)[-1])


def container(spec: JobSpec | None = None, **settings: Any) -> dict[str, Any]:
    (only,) = pod(spec, **settings)["spec"]["containers"]
    return dict(only)


def env(spec: JobSpec | None = None, **settings: Any) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container(spec, **settings)["env"]}


def test_every_object_validates_against_the_kubernetes_schemas() -> None:
    full = job(
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2, "memory": "2Gi"}}
    )
    built = objects(full, image_pull_secrets=("regcred",), service_account_name="nsfl-coordinator",
                    priority_class_name="nsfl-jobs", service_type="LoadBalancer",
                    service_annotations={"external-dns.alpha.kubernetes.io/hostname": "digits.fl.example.com"})  # fmt: skip
    assert [o["kind"] for o in built] == ["Service", "ConfigMap", "Secret", "Pod"]
    for obj in built + objects():
        assert kubernetes_problems(obj) == []


def test_building_twice_gives_the_same_objects() -> None:
    assert json.dumps(objects(), sort_keys=True) == json.dumps(objects(), sort_keys=True)


def test_names_are_deterministic_per_job_and_launch() -> None:
    service, configmap, secret, first = objects(launch=1)
    second = objects(launch=2)[-1]
    assert service["metadata"]["name"] == "nsfl-coord-digits"
    assert configmap["metadata"]["name"] == secret["metadata"]["name"] == first["metadata"]["name"]
    assert (first["metadata"]["name"], second["metadata"]["name"]) == (
        "nsfl-coord-digits-r1",
        "nsfl-coord-digits-r2",
    )
    assert first["metadata"]["labels"]["nsfl.io/launch"] == "1"


def test_every_object_lives_in_the_jobs_namespace_and_is_controlled_by_its_federated_job() -> None:
    for obj in objects():
        metadata = obj["metadata"]
        assert metadata["namespace"] == "team-a"
        assert metadata["ownerReferences"] == [{**OWNER, "controller": True, "blockOwnerDeletion": True}]
        assert metadata["labels"]["app.kubernetes.io/instance"] == "digits"
        assert metadata["labels"]["nsfl.io/job"] == "digits"
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "nsfl-job-scheduler"


def test_the_pod_runs_non_root_read_only_without_privileges_and_is_never_restarted_by_the_kubelet() -> None:
    built = pod()
    spec = built["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                       "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
    security = container()["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_pod_gets_its_work_directory_and_tmp_as_empty_dirs_and_its_spec_from_the_configmap() -> None:
    built = pod()
    volumes = {v["name"]: v for v in built["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    assert volumes[mounts["/var/lib/nsfl/coordinator"]]["emptyDir"] == {"sizeLimit": "2Gi"}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    spec_volume = volumes[mounts["/etc/nsfl/job"]]["configMap"]
    assert spec_volume["name"] == built["metadata"]["name"]
    assert env()["NSFL_COORDINATOR_JOB"]["value"] == "/etc/nsfl/job/job.json"
    assert env()["NSFL_COORDINATOR_WORKDIR"]["value"] == "/var/lib/nsfl/coordinator"


def test_the_configmap_holds_the_validated_spec_and_nothing_secret() -> None:
    spec = job()
    configmap = coordinator_configmap(spec, owner=OWNER, launch=1)
    text = configmap["data"]["job.json"]
    assert validate_spec(json.loads(text)) == json.loads(text) == spec.to_document()
    assert TOKEN not in json.dumps(objects()[1])
    pod_annotation = pod()["metadata"]["annotations"]["nsfl.io/spec-sha256"]
    assert configmap["metadata"]["annotations"]["nsfl.io/spec-sha256"] == pod_annotation


def test_a_spec_too_large_for_a_configmap_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="ConfigMap"):
        too_large = JobSpec.from_document({**document(), "parameters": {"blob": "x" * 1_000_000}})
        coordinator_configmap(too_large, owner=OWNER, launch=1)


def test_the_token_travels_only_in_the_launchs_secret() -> None:
    secret = coordinator_secret(job(), owner=OWNER, launch=4, token=TOKEN)
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    assert TOKEN not in json.dumps(pod())
    reference = env()["NSFL_COORDINATOR_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": "nsfl-coord-digits-r1", "key": "token"}
    with pytest.raises(ValueError, match="token"):
        coordinator_secret(job(), owner=OWNER, launch=1, token="")


def test_credentials_reach_the_coordinator_only_as_secret_references() -> None:
    variables = env()
    for name, secret, key in [
        ("NSFL_COORDINATOR_DOCUMENT_STORE", "nsfl-mongodb", "uri"),
        ("NSFL_S3_ACCESS_KEY", "nsfl-s3", "access-key"),
        ("NSFL_S3_SECRET_KEY", "nsfl-s3", "secret-key"),
    ]:
        assert variables[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
    for entry in container()["env"]:
        assert "value" in entry or "secretKeyRef" in entry["valueFrom"]


def test_every_coordinator_variable_is_a_setting_the_coordinator_knows() -> None:
    """The settings loader is strict: an unknown NSFL_COORDINATOR_* variable stops the coordinator."""
    fields = {field.name for field in dataclasses.fields(CoordinatorSettings)}
    for name in env():
        if name.startswith("NSFL_COORDINATOR_"):
            assert name.removeprefix("NSFL_COORDINATOR_").lower() in fields, name


def test_the_object_store_url_expands_from_earlier_variables_into_a_valid_s3_url() -> None:
    entries = container()["env"]
    values = {"OBJECT_STORE_BUCKET": "nsfl", "OBJECT_STORE_ENDPOINT": "http://minio.nsfl-system.svc:9000"}
    position = {entry["name"]: index for index, entry in enumerate(entries)}
    url_entry = entries[position["NSFL_COORDINATOR_OBJECT_STORE"]]
    for reference in re.findall(r"\$\((\w+)\)", url_entry["value"]):
        assert position[reference] < position["NSFL_COORDINATOR_OBJECT_STORE"]
    url = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], url_entry["value"])
    settings = parse_s3_url(url, {}, environ={})
    assert (settings.bucket, settings.endpoint, settings.secure) == (
        "nsfl",
        "minio.nsfl-system.svc:9000",
        False,
    )


def test_the_coordinator_listens_on_its_port_and_advertises_its_service() -> None:
    variables = env()
    assert variables["NSFL_COORDINATOR_LISTEN"]["value"] == "0.0.0.0:50053"
    assert variables["NSFL_COORDINATOR_ADVERTISE_HOST"]["value"] == "nsfl-coord-digits.team-a.svc"
    assert variables["NSFL_COORDINATOR_SELECTOR"]["value"] == "nsfl-client-selector.nsfl-system.svc:50051"
    assert variables["NSFL_COORDINATOR_SCHEDULER"]["value"] == "nsfl-job-scheduler.nsfl-system.svc:50052"
    external = env(advertise_host_template="{job}.{namespace}.fl.example.com")
    assert external["NSFL_COORDINATOR_ADVERTISE_HOST"]["value"] == "digits.team-a.fl.example.com"
    assert container()["ports"] == [{"name": "grpc", "containerPort": 50053, "protocol": "TCP"}]
    assert container()["readinessProbe"]["tcpSocket"] == {"port": "grpc"}


def test_the_service_selects_every_launch_of_the_job_on_the_grpc_port() -> None:
    service = coordinator_service(job(), owner=OWNER, settings=SETTINGS)
    for launch in (1, 7):
        labels = objects(launch=launch)[-1]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "grpc", "port": 50053, "targetPort": "grpc", "protocol": "TCP",
                                         "appProtocol": "grpc"}]  # fmt: skip
    external = objects(service_type="LoadBalancer", service_annotations={"a.example.com/x": "y"})[0]
    assert external["spec"]["type"] == "LoadBalancer"
    assert external["metadata"]["annotations"] == {"a.example.com/x": "y"}


def test_resources_come_from_the_job_and_the_settings_fill_the_rest() -> None:
    assert container()["resources"] == {
        "requests": {"cpu": "250m", "ephemeral-storage": "1Gi", "memory": "512Mi"},
        "limits": {"cpu": "2", "ephemeral-storage": "4Gi", "memory": "2Gi"},
    }
    given = coordinator_resources(resources({"cpu": "1"}, {"memory": "1Gi"}), SETTINGS)
    assert given["requests"]["cpu"] == "1" and given["limits"]["memory"] == "1Gi"


def test_a_default_that_would_fall_below_or_above_a_jobs_value_moves_to_meet_it() -> None:
    bigger_request = coordinator_resources(resources(requests={"memory": "4Gi"}), SETTINGS)
    assert bigger_request["limits"]["memory"] == "4Gi"
    smaller_limit = coordinator_resources(resources(limits={"cpu": "100m"}), SETTINGS)
    assert smaller_limit["requests"]["cpu"] == "100m"


def test_optional_pod_settings_appear_only_when_set() -> None:
    plain = pod()["spec"]
    assert not {"serviceAccountName", "priorityClassName", "imagePullSecrets"} & set(plain)
    chosen = pod(service_account_name="coord", priority_class_name="high", image_pull_secrets=("regcred",))[
        "spec"
    ]
    assert chosen["serviceAccountName"] == "coord" and chosen["priorityClassName"] == "high"
    assert chosen["imagePullSecrets"] == [{"name": "regcred"}]


def test_the_builders_refuse_a_spec_without_identity_or_an_empty_image() -> None:
    with pytest.raises(ValueError, match="name and namespace"):
        coordinator_service(dataclasses.replace(job(), name=""), owner=OWNER, settings=SETTINGS)
    with pytest.raises(ValueError, match="image"):
        coordinator_pod(job(), owner=OWNER, image="", settings=SETTINGS, launch=1)


def test_default_settings_are_valid() -> None:
    SETTINGS.validate()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"selector": "no-port"}, "selector"),
        ({"scheduler": ""}, "scheduler"),
        ({"service_type": "ExternalName"}, "service_type"),
        ({"image_pull_policy": "Sometimes"}, "image_pull_policy"),
        ({"advertise_host_template": "{pod}.example.com"}, "advertise_host_template"),
        ({"advertise_host_template": "{unclosed"}, "advertise_host_template"),
        ({"default_requests": {"gpu": "1"}}, "unknown resource"),
        ({"default_limits": {"cpu": "lots"}}, "quantity"),
        ({"default_requests": {"memory": "4Gi"}, "default_limits": {"memory": "1Gi"}}, "below its request"),
        ({"workdir_size_limit": "big"}, "workdir_size_limit"),
        ({"termination_grace_seconds": -1}, "termination_grace_seconds"),
    ],
)
def test_bad_settings_fail_when_the_platform_starts(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidSetting, match=match):
        dataclasses.replace(SETTINGS, **changes).validate()
