"""Pure builders of the objects that run one job's coordinator on Kubernetes.

Following crate-operator's habit, building and applying are kept apart:
these functions take values (the job's :class:`~libs.jobspec.JobSpec`, its
owner, settings, the launch number) and return plain JSON ready for the API
(typed by :mod:`libs.k8s.manifests`), without a client, a
clock or a random generator, so every field is unit-tested and validated
against the real Kubernetes schemas offline.  The Kubernetes platform
adapter applies what they return.

Per job, in the job's namespace (where its FederatedJob lives)::

    Service    nsfl-coord-<job>          one per job: a stable endpoint across relaunches
    ConfigMap  nsfl-coord-<job>-r<n>     the job spec (job.json) of launch n; no secrets
    Secret     nsfl-coord-<job>-r<n>     the coordinator token of launch n
    Pod        nsfl-coord-<job>-r<n>     launch n, restartPolicy Never (the scheduler relaunches)

Every object is controlled by the FederatedJob (``ownerReferences``), so
deleting the job deletes them.  Apply them in the order of
:func:`coordinator_objects` (the Pod last, so the kubelet finds its volume
and its Secret keys at once); "already exists" counts as success, with one
exception: the scheduler draws a new token when it retries a launch that
never reached the platform, so an existing token Secret of a launch whose
Pod does not exist yet must be replaced (delete, create), or the new
coordinator would present a token the scheduler no longer accepts.

Why a ConfigMap and a Secret *per launch*: a Pod and what it read at start
stay a matched pair, so a relaunch never changes what an ended Pod shows
and creating launch *n* twice yields the same objects.

How the coordinator is configured: only through ``NSFL_COORDINATOR_*``
variables, plain values except for credentials, which come from
``secretKeyRef``\\ s (never literals).  The object store URL is composed by
Kubernetes' ``$(VAR)`` expansion from the Secret's ``bucket`` and
``endpoint`` so that it, too, lives in one place.  ``enableServiceLinks`` is
off: Kubernetes would otherwise add ``<SERVICE>_PORT``-style variables, and
a Service named ``nsfl-coordinator-x`` in the namespace would yield
``NSFL_COORDINATOR_X_...``, which the strict settings loader refuses.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping

from libs.errors import ValidationFailed
from libs.jobspec import JobSpec
from libs.jobspec.quantities import parse_quantity
from libs.jobspec.spec import CoordinatorResources
from libs.k8s.manifests import (
    ConfigMap,
    Container,
    EnvVar,
    ObjectMeta,
    Pod,
    PodSpec,
    ResourceRequirements,
    Secret,
    SecurityContext,
    Service,
)
from libs.k8s.naming import (
    LAUNCH_LABEL,
    SPEC_HASH_ANNOTATION,
    OwnerRef,
    coordinator_labels,
    coordinator_name,
    coordinator_pod_name,
    owner_reference,
    selector_labels,
)
from libs.k8s.pod_settings import COORDINATOR_PORT, CoordinatorPodSettings

CONTAINER_NAME = "coordinator"
JOB_FILE_KEY = "job.json"
JOB_MOUNT_PATH = "/etc/nsfl/job"
WORKDIR_PATH = "/var/lib/nsfl/coordinator"
TOKEN_KEY = "token"
RUN_AS_USER = 10001
# A ConfigMap holds at most 1 MiB; the job spec parser already bounds specs well below that.
MAX_SPEC_BYTES = 900 * 1024

POD_SECURITY_CONTEXT: SecurityContext = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: SecurityContext = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def job_identity(job: JobSpec) -> tuple[str, str]:
    """``(namespace, name)`` of the job; ``ValueError`` if either is empty."""
    if not job.name or not job.namespace:
        raise ValueError("the job spec needs its name and namespace (validate it first)")
    return job.namespace, job.name


def spec_text(job: JobSpec) -> str:
    """The job spec as the coordinator reads it (``job.json``): canonical JSON, so equal specs match."""
    text = json.dumps(job.to_document(), sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False)
    if len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise ValidationFailed(
            f"the job spec is larger than {MAX_SPEC_BYTES} bytes and does not fit a ConfigMap"
        )
    return text


def spec_sha256(job: JobSpec) -> str:
    return hashlib.sha256(spec_text(job).encode("utf-8")).hexdigest()


def coordinator_configmap(job: JobSpec, *, owner: OwnerRef, launch: int) -> ConfigMap:
    """The ConfigMap holding launch ``launch``'s job spec, mounted read-only into its Pod."""
    namespace, name = job_identity(job)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            coordinator_pod_name(name, launch),
            namespace,
            name,
            owner,
            launch=launch,
            annotations={SPEC_HASH_ANNOTATION: spec_sha256(job)},
        ),
        "data": {JOB_FILE_KEY: spec_text(job)},
    }


def coordinator_secret(job: JobSpec, *, owner: OwnerRef, launch: int, token: str) -> Secret:
    """The Secret holding the token launch ``launch`` presents to the scheduler's ``ReportProgress``.

    The token is the one value the scheduler must hand over; a Secret keeps it
    out of the Pod manifest, ``kubectl describe`` and the scheduler's store
    (which keeps only its SHA-256).
    """
    namespace, name = job_identity(job)
    if not token:
        raise ValueError("a coordinator token must not be empty")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(coordinator_pod_name(name, launch), namespace, name, owner, launch=launch),
        "data": {TOKEN_KEY: base64.b64encode(token.encode("utf-8")).decode("ascii")},
    }


def coordinator_service(job: JobSpec, *, owner: OwnerRef, settings: CoordinatorPodSettings) -> Service:
    """The Service clients and the scheduler reach the job's coordinator through, on its gRPC port."""
    namespace, name = job_identity(job)
    metadata = _metadata(
        coordinator_name(name), namespace, name, owner, annotations=dict(settings.service_annotations)
    )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": settings.service_type,
            "selector": selector_labels(name),
            "ports": [
                {
                    "name": "grpc",
                    "port": COORDINATOR_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                }
            ],
        },
    }


def coordinator_pod(
    job: JobSpec, *, owner: OwnerRef, image: str, settings: CoordinatorPodSettings, launch: int
) -> Pod:
    """Launch ``launch`` of the job's coordinator: ``python -m coordinator`` as a non-root Pod."""
    namespace, name = job_identity(job)
    if not image:
        raise ValueError("the coordinator image must not be empty")
    pod_name = coordinator_pod_name(name, launch)
    container: Container = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", "coordinator"],
        "env": coordinator_env(job, settings=settings, launch=launch),
        "ports": [{"name": "grpc", "containerPort": COORDINATOR_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "tcpSocket": {"port": "grpc"},
            "initialDelaySeconds": 2,
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": coordinator_resources(job.resources, settings),
        "securityContext": CONTAINER_SECURITY_CONTEXT.copy(),
        "volumeMounts": [
            {"name": "job-spec", "mountPath": JOB_MOUNT_PATH, "readOnly": True},
            {"name": "workdir", "mountPath": WORKDIR_PATH},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        # On a crash the last log lines become the termination message `kubectl describe` shows.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec: PodSpec = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": POD_SECURITY_CONTEXT.copy(),
        "containers": [container],
        "volumes": [
            {
                "name": "job-spec",
                "configMap": {
                    "name": pod_name,
                    "defaultMode": 0o444,
                    "items": [{"key": JOB_FILE_KEY, "path": JOB_FILE_KEY}],
                },
            },
            {"name": "workdir", "emptyDir": {"sizeLimit": settings.workdir_size_limit}},
            {"name": "tmp", "emptyDir": {"sizeLimit": settings.workdir_size_limit}},
        ],
    }
    if settings.service_account_name:
        spec["serviceAccountName"] = settings.service_account_name
    if settings.priority_class_name:
        spec["priorityClassName"] = settings.priority_class_name
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in settings.image_pull_secrets]
    metadata = _metadata(
        pod_name, namespace, name, owner, launch=launch, annotations={SPEC_HASH_ANNOTATION: spec_sha256(job)}
    )
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def coordinator_objects(
    job: JobSpec,
    *,
    owner: OwnerRef,
    image: str,
    settings: CoordinatorPodSettings,
    launch: int,
    token: str,
) -> tuple[Service, ConfigMap, Secret, Pod]:
    """Everything launch ``launch`` needs, in the order to create it (the Pod last)."""
    return (
        coordinator_service(job, owner=owner, settings=settings),
        coordinator_configmap(job, owner=owner, launch=launch),
        coordinator_secret(job, owner=owner, launch=launch, token=token),
        coordinator_pod(job, owner=owner, image=image, settings=settings, launch=launch),
    )


def coordinator_env(job: JobSpec, *, settings: CoordinatorPodSettings, launch: int) -> list[EnvVar]:
    """The coordinator's ``NSFL_COORDINATOR_*`` settings; credentials only as ``secretKeyRef``\\ s.

    Order matters: Kubernetes expands ``$(VAR)`` only from variables listed earlier.
    """
    namespace, name = job_identity(job)
    service = coordinator_name(name)
    return [
        {"name": "NSFL_COORDINATOR_JOB", "value": f"{JOB_MOUNT_PATH}/{JOB_FILE_KEY}"},
        {"name": "NSFL_COORDINATOR_WORKDIR", "value": WORKDIR_PATH},
        {"name": "NSFL_COORDINATOR_LISTEN", "value": f"0.0.0.0:{COORDINATOR_PORT}"},
        {
            "name": "NSFL_COORDINATOR_ADVERTISE_HOST",
            "value": settings.advertise_host(service=service, namespace=namespace, job=name),
        },
        {"name": "NSFL_COORDINATOR_SELECTOR", "value": settings.selector},
        {"name": "NSFL_COORDINATOR_SCHEDULER", "value": settings.scheduler},
        {"name": "NSFL_COORDINATOR_LOG_LEVEL", "value": settings.log_level},
        {"name": "NSFL_COORDINATOR_LOG_JSON", "value": "true" if settings.log_json else "false"},
        _secret_env("NSFL_COORDINATOR_DOCUMENT_STORE", settings.document_store_secret, "uri"),
        _secret_env("OBJECT_STORE_BUCKET", settings.object_store_secret, "bucket"),
        _secret_env("OBJECT_STORE_ENDPOINT", settings.object_store_secret, "endpoint"),
        _secret_env("NSFL_S3_ACCESS_KEY", settings.object_store_secret, "access-key"),
        _secret_env("NSFL_S3_SECRET_KEY", settings.object_store_secret, "secret-key"),
        {
            "name": "NSFL_COORDINATOR_OBJECT_STORE",
            "value": "s3://$(OBJECT_STORE_BUCKET)?endpoint=$(OBJECT_STORE_ENDPOINT)",
        },
        _secret_env("NSFL_COORDINATOR_TOKEN", coordinator_pod_name(name, launch), TOKEN_KEY),
    ]


def coordinator_resources(
    job_resources: CoordinatorResources, settings: CoordinatorPodSettings
) -> ResourceRequirements:
    """Requests and limits: the job's values where it gives them, the settings' defaults elsewhere.

    Mixing two sources can yield a limit below its request (a job asking for
    4Gi of memory under a 2Gi default limit), which Kubernetes refuses; the
    value the job gave wins and the default moves to meet it.
    """
    job_requests = {str(k): str(v) for k, v in job_resources.requests.items()}
    job_limits = {str(k): str(v) for k, v in job_resources.limits.items()}
    requests = {**settings.default_requests, **job_requests}
    limits = {**settings.default_limits, **job_limits}
    for resource in set(requests) & set(limits):
        request, limit = parse_quantity(requests[resource]), parse_quantity(limits[resource])
        if request is None or limit is None or limit >= request:
            continue
        if resource in job_limits and resource not in job_requests:
            requests[resource] = limits[resource]
        else:
            limits[resource] = requests[resource]
    return {"requests": dict(sorted(requests.items())), "limits": dict(sorted(limits.items()))}


def _secret_env(variable: str, secret: str, key: str) -> EnvVar:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _metadata(
    object_name: str,
    namespace: str,
    job_name: str,
    owner: OwnerRef,
    *,
    launch: int | None = None,
    annotations: Mapping[str, str] | None = None,
) -> ObjectMeta:
    labels = coordinator_labels(job_name)
    if launch is not None:
        labels[LAUNCH_LABEL] = str(launch)
    metadata: ObjectMeta = {
        "name": object_name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(owner, job_name)],
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    return metadata
