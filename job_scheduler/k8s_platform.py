"""The ``kubernetes`` platform: each coordinator is a Pod, reached through a Service.

What the objects look like is decided by the pure builders of
:mod:`libs.k8s` (names, labels, ownerReferences, resources, security
context, environment); this module only applies them and reads Pods back,
so it stays a thin adapter over :class:`~job_scheduler.k8s_api.KubeApi`.

Per job, in the job's namespace (where its ``FederatedJob`` lives)::

    Service    nsfl-coord-<job>        one per job; annotation nsfl.io/launch = latest launch created
    ConfigMap  nsfl-coord-<job>-r<n>   the spec of launch n
    Secret     nsfl-coord-<job>-r<n>   the token of launch n
    Secret     nsfl-coord-<job>-tls    the certificate of the latest launch (ca.crt, tls.crt, tls.key)
    Pod        nsfl-coord-<job>-r<n>   launch n, restartPolicy Never

How the :class:`~job_scheduler.platform.Platform` promises are kept:

- **Idempotent launch.**  Names depend only on the job and the launch
  number, so a launch repeated after a crash meets "already exists": a Pod
  that exists is adopted, never doubled.  The one object that is replaced
  is the token Secret of a launch whose Pod does not exist yet: a retried
  launch carries a new token, and the coordinator must present the one the
  scheduler now expects (see :mod:`libs.k8s.objects`).  So is the
  certificate Secret: each launch that creates its Pod signs a new
  certificate (:mod:`job_scheduler.coordinator_certificates`), and the
  Pods of earlier launches, ended, no longer read it
  (:mod:`libs.k8s.coordinator_tls`).
- **Owner first.**  Every object is controlled by the job's
  ``FederatedJob``, so the launch needs its uid.  The mirror
  (:mod:`job_scheduler.k8s_mirror`) creates the object of a job submitted
  over REST as soon as it is stored; if it is not there yet, the launch is
  ``Unavailable`` and the scheduler's watch retries it.
- **Finding the latest launch.**  :meth:`find` reads the job's Pods (by
  label) and the Service's ``nsfl.io/launch`` annotation, written after
  each Pod is created.  A Pod that vanished (deleted by hand, or by its
  node's failure) while the annotation still names its launch is reported
  ended without a verdict (``PodNotFound``): a crash, relaunched from the
  last checkpoint while retries are left.
- **Exit codes** come from :func:`libs.k8s.pod_phase_outcome`: 0/1/3 for a
  coordinator's verdict, ``None`` (a crash) for an eviction, a lost node or
  a killed container, and 1 for a Pod that can never start (a missing
  Secret key, a bad image name), which would fail the same way again.
  Such a Pod is deleted when first reported, so it cannot start a stray
  coordinator later if someone fixes the Secret.
- **Stop** deletes the Pod with its grace period: Kubernetes sends SIGTERM,
  the coordinator checkpoints, reports STOPPED and exits 3.  **Kill**
  deletes it with no grace.

``LaunchRequest.store_url`` and ``object_store_url`` are not used: a
coordinator Pod reads its document and object store, credentials included,
from the namespace's Secrets, never from literals in its manifest.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from job_scheduler.coordinator_certificates import (
    CoordinatorIssuer,
    coordinator_environment,
    insecure_environment,
)
from job_scheduler.k8s_api import (
    BY_KIND,
    CONFIGMAPS,
    FEDERATED_JOBS,
    PODS,
    SECRETS,
    SERVICES,
    KubeApi,
)
from job_scheduler.platform import CoordinatorInfo, Launched, LaunchRequest
from libs.errors import AlreadyExists, NsflError, Unavailable, ValidationFailed
from libs.json_values import JsonObject
from libs.k8s import (
    COORDINATOR_PORT,
    CoordinatorPodSettings,
    CoordinatorPodState,
    OwnerRef,
    coordinator_name,
    coordinator_objects,
    coordinator_pod_name,
    owner_of,
    pod_phase_outcome,
)
from libs.k8s.coordinator_tls import (
    coordinator_tls_paths,
    coordinator_tls_secret,
    coordinator_tls_secret_name,
    with_coordinator_wire,
)
from libs.k8s.manifests import ConfigMap, KubeObject, Pod, Secret, Service
from libs.k8s.naming import COMPONENT, JOB_LABEL, LAUNCH_LABEL, MANAGED_BY
from libs.k8s.objects import CONTAINER_NAME
from libs.records import EXIT_FAILED, STATES_BY_EXIT_CODE, CoordinatorStatus, JobState

log = logging.getLogger(__name__)

LAUNCH_ANNOTATION = LAUNCH_LABEL
_PLATFORM_REASONS = frozenset({CoordinatorPodState.LOST, CoordinatorPodState.CRASHED})


def job_selector(job_name: str) -> dict[str, str]:
    """The labels every coordinator object of ``job_name`` carries (a subset of ``coordinator_labels``)."""
    return {
        JOB_LABEL: job_name,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def launch_of(item: Mapping[str, Any]) -> int:
    """The launch number an object's ``nsfl.io/launch`` label (or annotation) names; 0 if none."""
    metadata = item.get("metadata") or {}
    for source in (metadata.get("labels") or {}, metadata.get("annotations") or {}):
        value = str(source.get(LAUNCH_LABEL, ""))
        if value.isdigit():
            return int(value)
    return 0


def coordinator_info(
    pod: Mapping[str, Any] | None, *, name: str, launch: int, endpoint: str
) -> CoordinatorInfo:
    """What the scheduler sees of launch ``launch``, given its Pod (``None``: the Pod is gone)."""
    outcome = pod_phase_outcome(pod)
    if outcome.alive:
        started = outcome.state is CoordinatorPodState.RUNNING and _ready(pod)
        state = JobState.RUNNING if started else JobState.STARTING
        return CoordinatorInfo(
            name,
            launch,
            running=True,
            endpoint=endpoint,
            status={"state": state.value, "reason": outcome.reason},
        )
    code = outcome.contract_exit_code
    # An evicted Pod's container may have ended with no message of its own: the Pod says why.
    message = outcome.message or (str((pod or {}).get("status", {}).get("message") or "")
                                  if outcome.state is CoordinatorPodState.LOST else "")  # fmt: skip
    detail = f"{outcome.reason}: {message}" if message else outcome.reason
    # A coordinator that ended with a verdict said why in its report; for a failure, its termination
    # message (the last log lines) stands in if that report was lost.  Otherwise the Pod's reason.
    if outcome.exit_code in STATES_BY_EXIT_CODE:
        reason = outcome.message if outcome.exit_code == EXIT_FAILED else ""
    else:
        reason = detail
    verdict = STATES_BY_EXIT_CODE.get(code) if code is not None else None
    status: CoordinatorStatus = {
        "state": verdict.value if verdict is not None else outcome.state.value,
        "reason": reason,
    }
    platform_reason = ""
    if outcome.state in _PLATFORM_REASONS and not outcome.reason.startswith(("ExitCode", "Error")):
        platform_reason = detail if outcome.state is CoordinatorPodState.LOST else outcome.reason
    return CoordinatorInfo(
        name,
        launch,
        running=False,
        exit_code=code,
        endpoint=endpoint,
        status=status,
        platform_reason=platform_reason,
    )


class KubernetesPlatform:
    """Coordinators as Pods in their jobs' namespaces (see the module doc)."""

    def __init__(
        self,
        api: KubeApi,
        *,
        image: str,
        pod_settings: CoordinatorPodSettings,
        certificates: CoordinatorIssuer | None,
    ) -> None:
        pod_settings.validate()
        self._api = api
        # Signs each launch's certificate; None only for an insecure scheduler (plaintext coordinators).
        self._certificates = certificates
        self._image = image
        self._pod_settings = pod_settings

    # --- Platform -----------------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> Launched:
        namespace, name, launch = request.namespace, request.name, request.launch
        pod_name = coordinator_pod_name(name, launch)
        if await self._api.try_get(PODS, namespace, pod_name) is not None:
            await self._record_launch(namespace, name, launch)
            log.info("coordinator pod %s/%s exists: adopted it", namespace, pod_name)
            return Launched(pod_name, adopted=True)
        owner = await self._api.try_get(FEDERATED_JOBS, namespace, name)
        if owner is None:
            raise Unavailable(f"the FederatedJob {namespace}/{name} does not exist yet")
        settings = dataclasses.replace(
            self._pod_settings, selector=request.selector_address, scheduler=request.scheduler_address
        )
        try:
            objects = coordinator_objects(
                request.spec, owner=owner_of(owner), image=self._image, settings=settings,
                launch=launch, token=request.token,
            )  # fmt: skip
            applied = self._with_wire(request, owner_of(owner), objects)
        except ValueError as exc:
            raise ValidationFailed(f"cannot build the coordinator of {namespace}/{name}: {exc}") from None
        adopted = False
        for item in applied:
            adopted = await self._create(namespace, item) or adopted
        await self._record_launch(namespace, name, launch)
        log.info("launched coordinator pod %s/%s (launch %d)", namespace, pod_name, launch)
        return Launched(pod_name, adopted=adopted)

    async def find(self, namespace: str, name: str) -> CoordinatorInfo | None:
        pods = await self._pods(namespace, name)
        service = await self._api.try_get(SERVICES, namespace, coordinator_name(name))
        recorded = launch_of(service) if service is not None else 0
        latest = pods[-1] if pods else None
        if latest is None and not recorded:
            return None
        endpoint = self._endpoint(namespace, name)
        if latest is None or launch_of(latest) < recorded:
            pod_name = coordinator_pod_name(name, recorded)
            return coordinator_info(None, name=pod_name, launch=recorded, endpoint=endpoint)
        pod_name = str(latest["metadata"]["name"])
        info = coordinator_info(latest, name=pod_name, launch=launch_of(latest), endpoint=endpoint)
        if not info.running and (latest.get("status") or {}).get("phase", "Pending") == "Pending":
            log.info(
                "coordinator pod %s/%s can never start (%s): deleting it",
                namespace,
                pod_name,
                info.status.get("reason"),
            )
            await self._api.delete(PODS, namespace, pod_name, grace_seconds=0)
        return info

    async def stop(self, namespace: str, name: str) -> bool:
        return await self._end(namespace, name, grace_seconds=None)

    async def kill(self, namespace: str, name: str) -> bool:
        return await self._end(namespace, name, grace_seconds=0)

    async def remove(self, namespace: str, name: str) -> None:
        """Delete every coordinator object of the job (the FederatedJob's own deletion is not ours)."""
        pods = await self._pods(namespace, name)
        configmaps = await self._api.list(CONFIGMAPS, namespace, labels=job_selector(name))
        for pod in pods:
            await self._api.delete(PODS, namespace, str(pod["metadata"]["name"]), grace_seconds=0)
        per_launch = {str(item["metadata"]["name"]) for item in [*pods, *configmaps]}
        for object_name in sorted(per_launch):
            await self._api.delete(SECRETS, namespace, object_name)
            await self._api.delete(CONFIGMAPS, namespace, object_name)
        await self._api.delete(SECRETS, namespace, coordinator_tls_secret_name(name))
        await self._api.delete(SERVICES, namespace, coordinator_name(name))
        log.info("removed the coordinator objects of %s/%s", namespace, name)

    async def logs(self, namespace: str, name: str, tail_lines: int) -> str:
        """The last lines of every launch's log, oldest launch first."""
        if tail_lines <= 0:
            return ""
        lines: list[str] = []
        for pod in await self._pods(namespace, name):
            pod_name = str(pod["metadata"]["name"])
            try:
                text = await self._api.log(
                    namespace, pod_name, container=CONTAINER_NAME, tail_lines=tail_lines
                )
            except NsflError:  # not started yet, or already gone
                continue
            lines.append(f"--- launch {launch_of(pod)} ({pod_name}) ---")
            lines.extend(text.splitlines())
        return "\n".join(lines[-tail_lines:])

    async def close(self) -> None:
        """Nothing of its own to release: the API client belongs to the application."""

    # --- helpers ------------------------------------------------------------------------------

    def _with_wire(
        self, request: LaunchRequest, owner: OwnerRef, objects: tuple[Service, ConfigMap, Secret, Pod]
    ) -> list[KubeObject]:
        """``objects`` with this launch's certificate Secret before the Pod, and the Pod pointed at it."""
        service_object, configmap, token_secret, pod = objects
        others: list[KubeObject] = [service_object, configmap, token_secret]
        issuer = self._certificates
        if issuer is None:
            return [*others, with_coordinator_wire(pod, environment=insecure_environment(), tls_secret=None)]
        service = coordinator_name(request.name)
        host = self._pod_settings.advertise_host(
            service=service, namespace=request.namespace, job=request.name
        )
        issued = issuer.issue(request.namespace, request.name, request.spec, hosts=(host,))
        secret = coordinator_tls_secret(
            request.namespace, request.name, owner=owner, launch=request.launch,
            ca_pem=issuer.ca_pem(), cert_pem=issued.cert_pem, key_pem=issued.key_pem,
        )  # fmt: skip
        paths = coordinator_tls_paths()
        environment = coordinator_environment(
            ca=paths["ca"], cert=paths["cert"], key=paths["key"], crl=paths["crl"],
            trust_domain=issuer.trust_domain,
        )  # fmt: skip
        pod = with_coordinator_wire(pod, environment=environment, tls_secret=secret["metadata"]["name"])
        return [*others, secret, pod]

    async def _pods(self, namespace: str, name: str) -> list[JsonObject]:
        """The job's coordinator Pods, oldest launch first."""
        pods = await self._api.list(PODS, namespace, labels=job_selector(name))
        return sorted(pods, key=launch_of)

    async def _create(self, namespace: str, item: KubeObject) -> bool:
        """Create ``item``; ``True`` if it is a Pod that already existed (adopted)."""
        resource = BY_KIND[str(item["kind"])]
        try:
            await self._api.create(resource, namespace, item)
        except AlreadyExists:
            if item["kind"] == "Pod":
                return True
            if item["kind"] == "Secret":
                # The Pod of this launch does not exist (checked first), so nothing read this token (or
                # this certificate): replace it with the one the scheduler expects now.
                object_name = str(item["metadata"]["name"])
                await self._api.delete(SECRETS, namespace, object_name, grace_seconds=0)
                await self._api.create(SECRETS, namespace, item)
        return False

    async def _record_launch(self, namespace: str, name: str, launch: int) -> None:
        patch = {"metadata": {"annotations": {LAUNCH_ANNOTATION: str(launch)}}}
        await self._api.patch(SERVICES, namespace, coordinator_name(name), patch)

    async def _end(self, namespace: str, name: str, *, grace_seconds: int | None) -> bool:
        live = _live(await self._pods(namespace, name))
        if live is None:
            return False
        pod_name = str(live["metadata"]["name"])
        deleted = await self._api.delete(PODS, namespace, pod_name, grace_seconds=grace_seconds)
        if deleted:
            how = "killed" if grace_seconds == 0 else "asked to stop"
            log.info("coordinator pod %s/%s %s", namespace, pod_name, how)
        return deleted

    def _endpoint(self, namespace: str, name: str) -> str:
        service = coordinator_name(name)
        host = self._pod_settings.advertise_host(service=service, namespace=namespace, job=name)
        return f"{host}:{COORDINATOR_PORT}"


def _live(pods: Sequence[JsonObject]) -> JsonObject | None:
    """The newest Pod whose coordinator may still run."""
    alive = [pod for pod in pods if pod_phase_outcome(pod).alive]
    return alive[-1] if alive else None


def _ready(pod: Mapping[str, Any] | None) -> bool:
    """Whether the Pod's readiness probe passed (its coordinator serves gRPC)."""
    for condition in ((pod or {}).get("status") or {}).get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False
