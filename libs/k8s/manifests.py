"""The Kubernetes objects nsfl builds, as ``TypedDict``\\ s: the fields we write, named once.

The builders (:mod:`libs.k8s.objects`, :mod:`libs.k8s.coordinator_tls`)
return plain JSON ready for the API server (kopf's habit: wire shapes as
``TypedDict``\\ s at the edge), so a reader and mypy see which fields a
coordinator's Pod, Service, ConfigMap and Secrets carry without running the
builders.  They state only what nsfl writes, not the whole Kubernetes API:
the offline check against the real schemas (``tests/unit/libs/k8s``) is
what keeps them valid.  Objects read back from the API server are
:data:`~libs.json_values.JsonObject`: the server adds fields of its own.
"""

from __future__ import annotations

from typing import TypedDict


class OwnerReference(TypedDict):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[OwnerReference]


class SecretKeySelector(TypedDict):
    name: str
    key: str


class EnvVarSource(TypedDict):
    secretKeyRef: SecretKeySelector


class EnvVar(TypedDict, total=False):
    """A container's variable: a plain ``value`` or, for a credential, ``valueFrom`` a Secret."""

    name: str
    value: str
    valueFrom: EnvVarSource


class VolumeMount(TypedDict, total=False):
    name: str
    mountPath: str
    readOnly: bool


class KeyToPath(TypedDict):
    key: str
    path: str


class ConfigMapVolume(TypedDict, total=False):
    name: str
    optional: bool
    defaultMode: int
    items: list[KeyToPath]


class SecretVolume(TypedDict):
    secretName: str
    defaultMode: int


class EmptyDirVolume(TypedDict):
    sizeLimit: str


class Volume(TypedDict, total=False):
    name: str
    configMap: ConfigMapVolume
    secret: SecretVolume
    emptyDir: EmptyDirVolume


class ContainerPort(TypedDict):
    name: str
    containerPort: int
    protocol: str


class TcpProbe(TypedDict):
    port: str


class Probe(TypedDict):
    tcpSocket: TcpProbe
    initialDelaySeconds: int
    periodSeconds: int
    failureThreshold: int


class ResourceRequirements(TypedDict):
    requests: dict[str, str]
    limits: dict[str, str]


class Capabilities(TypedDict):
    drop: list[str]


class SeccompProfile(TypedDict):
    type: str


class SecurityContext(TypedDict, total=False):
    """A Pod's or a container's security context (a Pod's has ``fsGroup``, a container's the rest)."""

    runAsNonRoot: bool
    runAsUser: int
    runAsGroup: int
    fsGroup: int
    readOnlyRootFilesystem: bool
    allowPrivilegeEscalation: bool
    privileged: bool
    capabilities: Capabilities
    seccompProfile: SeccompProfile


class Container(TypedDict, total=False):
    name: str
    image: str
    imagePullPolicy: str
    command: list[str]
    env: list[EnvVar]
    ports: list[ContainerPort]
    readinessProbe: Probe
    resources: ResourceRequirements
    securityContext: SecurityContext
    volumeMounts: list[VolumeMount]
    terminationMessagePolicy: str


class LocalObjectReference(TypedDict):
    name: str


class PodSpec(TypedDict, total=False):
    restartPolicy: str
    enableServiceLinks: bool
    automountServiceAccountToken: bool
    terminationGracePeriodSeconds: int
    securityContext: SecurityContext
    containers: list[Container]
    volumes: list[Volume]
    serviceAccountName: str
    priorityClassName: str
    imagePullSecrets: list[LocalObjectReference]


class ServicePort(TypedDict):
    name: str
    port: int
    targetPort: str
    protocol: str
    appProtocol: str


class ServiceSpec(TypedDict):
    type: str
    selector: dict[str, str]
    ports: list[ServicePort]


class KubeObject(TypedDict):
    """What every object has: its kind and its metadata."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta


class Pod(KubeObject):
    spec: PodSpec


class Service(KubeObject):
    spec: ServiceSpec


class ConfigMap(KubeObject):
    data: dict[str, str]


class Secret(KubeObject):
    type: str
    data: dict[str, str]  # base64 values


class DeleteOptions(TypedDict, total=False):
    apiVersion: str
    kind: str
    propagationPolicy: str
    gracePeriodSeconds: int
