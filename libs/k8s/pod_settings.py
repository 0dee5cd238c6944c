"""How the Kubernetes platform shapes coordinator Pods: one frozen dataclass, checked once.

The scheduler's settings (``NSFL_SCHEDULER_*``) carry these values; the
platform builds one :class:`CoordinatorPodSettings` at start and passes it
to every builder in :mod:`libs.k8s.objects`, so the builders stay pure and a
bad value fails when the scheduler starts, not at the first job.

Why secrets are named, never held: the builders only write
``secretKeyRef``\\ s to Secrets that live in the job's namespace
(``nsfl-mongodb`` with key ``uri``; ``nsfl-s3`` with keys ``endpoint``,
``bucket``, ``access-key``, ``secret-key``), so no credential ever passes
through the scheduler's memory, its logs or a Pod manifest.  Coordinator
Pods run in the job's namespace because their owner, the FederatedJob,
lives there (Kubernetes ignores a namespaced owner in another namespace),
so those Secrets must exist in every job namespace; ``deploy/kubernetes/
job-namespace`` provides them.

Why an advertise-host template: clients dial the coordinator from outside
the cluster, so the host it advertises must be one they can resolve.  The
default, ``{service}.{namespace}.svc``, suits clients inside the cluster;
for external clients, pick ``service_type: LoadBalancer`` with annotations
that give the Service a DNS name (external-dns, a cloud LB) and a template
such as ``{service}.{namespace}.fl.example.com``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from libs.errors import InvalidSetting
from libs.jobspec.quantities import parse_quantity

COORDINATOR_PORT = 50053
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TEMPLATE_FIELDS = frozenset({"service", "namespace", "job"})
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


@dataclass(frozen=True)
class CoordinatorPodSettings:
    """What every coordinator Pod shares; a job's own ``resources`` override the defaults."""

    # host:port of the client selector and of the scheduler's JobControl, as seen from job namespaces.
    selector: str = "nsfl-client-selector.nsfl-system.svc:50051"
    scheduler: str = "nsfl-job-scheduler.nsfl-system.svc:50052"
    document_store_secret: str = "nsfl-mongodb"
    object_store_secret: str = "nsfl-s3"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    # None: the namespace's default ServiceAccount (its token is never mounted either way).
    service_account_name: str | None = None
    priority_class_name: str | None = None
    service_type: str = "ClusterIP"
    service_annotations: Mapping[str, str] = field(default_factory=dict)
    advertise_host_template: str = "{service}.{namespace}.svc"
    default_requests: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    )
    default_limits: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "4Gi"}
    )
    # The coordinator's work directory (status file, spooled uploads); an emptyDir of at most this size.
    workdir_size_limit: str = "2Gi"
    # SIGTERM makes the coordinator checkpoint and exit 3; give it time to finish writing.
    termination_grace_seconds: int = 120
    log_level: str = "INFO"
    log_json: bool = True

    def validate(self) -> None:
        """``InvalidSetting`` naming the first bad value; called once when the platform starts."""
        for name in ("selector", "scheduler", "document_store_secret", "object_store_secret"):
            if not getattr(self, name):
                raise InvalidSetting(f"coordinator pod setting {name!r} must not be empty")
        for name in ("selector", "scheduler"):
            host, sep, port = getattr(self, name).rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
                raise InvalidSetting(f"coordinator pod setting {name!r} must be host:port")
        if self.service_type not in SERVICE_TYPES:
            raise InvalidSetting(
                f"coordinator pod setting 'service_type' must be one of {', '.join(SERVICE_TYPES)}"
            )
        if self.image_pull_policy not in PULL_POLICIES:
            raise InvalidSetting(
                f"coordinator pod setting 'image_pull_policy' must be one of {', '.join(PULL_POLICIES)}"
            )
        if not 0 <= self.termination_grace_seconds <= 3600:
            raise InvalidSetting("coordinator pod setting 'termination_grace_seconds' must be within 0-3600")
        self._validate_template()
        self._validate_resources()

    def advertise_host(self, *, service: str, namespace: str, job: str) -> str:
        """The host a job's coordinator tells clients to dial."""
        return self.advertise_host_template.format(service=service, namespace=namespace, job=job)

    def _validate_template(self) -> None:
        try:
            fields = {
                name for _, name, _, _ in string.Formatter().parse(self.advertise_host_template) if name
            }
        except ValueError as exc:
            raise InvalidSetting(
                f"coordinator pod setting 'advertise_host_template' is not a template: {exc}"
            ) from None
        unknown = fields - TEMPLATE_FIELDS
        if unknown or not self.advertise_host_template:
            raise InvalidSetting(
                "coordinator pod setting 'advertise_host_template' may use only "
                f"{{service}}, {{namespace}} and {{job}}, got {sorted(unknown)}"
            )

    def _validate_resources(self) -> None:
        if parse_quantity(self.workdir_size_limit) is None:
            raise InvalidSetting(
                "coordinator pod setting 'workdir_size_limit' must be a quantity such as '2Gi'"
            )
        for which, values in (
            ("default_requests", self.default_requests),
            ("default_limits", self.default_limits),
        ):
            for name, value in values.items():
                if name not in RESOURCE_NAMES:
                    raise InvalidSetting(f"coordinator pod setting '{which}.{name}': unknown resource")
                if parse_quantity(value) is None:
                    raise InvalidSetting(f"coordinator pod setting '{which}.{name}' must be a quantity")
        for name, request in self.default_requests.items():
            limit = parse_quantity(self.default_limits.get(name))
            wanted = parse_quantity(request)
            if limit is not None and wanted is not None and limit < wanted:
                raise InvalidSetting(f"coordinator pod setting 'default_limits.{name}' is below its request")
