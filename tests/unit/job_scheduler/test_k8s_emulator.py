"""KMock's Kubernetes emulator, taught the few API-server rules nsfl relies on; and the kubelet's part.

KMock's ``KubernetesEmulator`` stores objects and merges patches as plain
dicts (``/work/shared/notes/testing-kubernetes.md``).  :class:`ApiServer`
adds, as a real API server does:

- ``metadata.uid``, ``creationTimestamp``, ``generation`` and a
  ``resourceVersion`` that changes with every write (ownerReferences need
  the owner's uid; kopf matches its own patches by resourceVersion);
- ``generation`` + 1 when a patch changes ``spec``;
- the status subresource of FederatedJobs and Pods: a patch of the object
  cannot change ``.status``, a patch of ``/status`` changes nothing else;
- graceful Pod deletion: deleting a Pod with a grace period only marks it
  (``deletionTimestamp``) until its container ends and it is deleted again
  with no grace, which is the kubelet's part (:class:`Kubelet`).

There is still no kubelet, no garbage collection by ownerReferences and no
schema validation; the tests check what those would.  The other test
modules of the Kubernetes mode import from here; the tests below check the
emulator itself, so a test of the scheduler never fails because of it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
import pytest
from kmock._internal import dicts, enums, rendering

from job_scheduler.k8s_api import FEDERATED_JOBS, PODS, SECRETS, KubeApi, KubeCredentials, Resource
from libs.errors import NotFound

_WITH_STATUS = {("nsfl.io", "federatedjobs"), ("", "pods")}
TERMINATING = "emulator.test/terminating"
RESOURCES: dict[str, dict[str, Any]] = {
    "nsfl.io/v1alpha1/federatedjobs": {"kind": "FederatedJob", "singular": "federatedjob", "namespaced": True,
                                       "shortnames": {"fljob"}, "subresources": {"status"}},
    "v1/pods": {"kind": "Pod", "singular": "pod", "namespaced": True, "subresources": {"status", "log"}},
    "v1/services": {"kind": "Service", "singular": "service", "namespaced": True},
    "v1/configmaps": {"kind": "ConfigMap", "singular": "configmap", "namespaced": True},
    "v1/secrets": {"kind": "Secret", "singular": "secret", "namespaced": True},
    "v1/events": {"kind": "Event", "singular": "event", "namespaced": True},
    "v1/namespaces": {"kind": "Namespace", "singular": "namespace", "namespaced": False},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "kind": "CustomResourceDefinition", "singular": "customresourcedefinition", "namespaced": False},
}  # fmt: skip
VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiServer(kmock.KubernetesEmulator):
    """The emulator plus uids, generations, resource versions, status subresources, graceful deletion."""

    _version = 0

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        resource, data = request.resource, request.data
        if resource is not None and isinstance(data, dict):
            if request.action == enums.action.CREATE:
                self._stamp_new(resource, data)
            elif request.action == enums.action.UPDATE and request.name:
                self._shape_patch(request, data)
        elif resource is not None and isinstance(data, list) and request.action == enums.action.UPDATE:
            # A JSON patch (kopf's finalizers): a new resourceVersion after kopf's own "test" op.
            data.append({"op": "replace", "path": "/metadata/resourceVersion",
                         "value": self._next_version()})  # fmt: skip
        if resource is not None and request.action == enums.action.DELETE and resource.plural == "pods":
            marked = await self._mark_terminating(request)
            if marked is not None:
                return aiohttp.web.json_response(marked)
        return await super()._handle(request)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        listed = await super()._serve_list(request)
        assert isinstance(listed, dict)
        listed["metadata"] = {"resourceVersion": str(self._version)}
        return listed

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        """A watch from a list's resourceVersion replays only what changed since (KMock replays all).

        Replaying the whole list again would hand kopf a stale copy of an
        object it has just patched, which a real API server never does.
        """
        since = str(request.params.get("resourceVersion") or "")
        if not since.isdigit():
            async for item in super()._serve_watch(request):
                yield item
            return
        yield b""
        assert request.resource is not None
        bus = self._buses[request.resource]
        async with self._lock:
            marker = await bus.mark()
            changed = [found.raw for (resource, namespace, _), found in self._objects.items()
                       if resource == request.resource and not found.deleted
                       and request.namespace in (None, namespace)
                       and int(found.raw["metadata"].get("resourceVersion", 0)) > int(since)]  # fmt: skip
        try:
            for raw in changed:
                yield {"type": "MODIFIED", "object": raw}
            async for event in bus.stream(since=marker):
                metadata = event.get("object", {}).get("metadata", {})
                if request.namespace in (None, metadata.get("namespace")):
                    yield event
        finally:
            await bus.unmark(marker)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        """A JSON patch whose "test" fails is 422 Unprocessable (kopf retries on its next cycle)."""
        if isinstance(exc, jsonpatch.JsonPatchException):
            exc = kmock.KubernetesError(status=422, reason="Invalid", message=str(exc))
        return await super()._render_error(exc)

    def _stamp_new(self, resource: Any, data: dict[str, Any]) -> None:
        metadata = data.setdefault("metadata", {})
        metadata.update(uid=str(uuid.uuid4()), generation=1, resourceVersion=self._next_version(),
                        creationTimestamp=_now())  # fmt: skip
        if resource.plural == "pods":
            data.setdefault("status", {"phase": "Pending"})
        elif (resource.group, resource.plural) in _WITH_STATUS:
            data.pop("status", None)

    def _shape_patch(self, request: rendering.Request, data: dict[str, Any]) -> None:
        resource = request.resource
        assert resource is not None
        if (resource.group, resource.plural) in _WITH_STATUS:
            if request.subresource == "status":
                for key in [k for k in data if k != "status"]:
                    del data[key]
            else:
                data.pop("status", None)
        metadata = data.setdefault("metadata", {})
        current = self._current(request)
        if current is not None and "spec" in data and request.subresource is None:
            spec = copy.deepcopy(dict(current.get("spec") or {}))
            if dicts.patch_dict(spec, data["spec"]) != (current.get("spec") or {}):
                metadata["generation"] = int(current["metadata"].get("generation", 1)) + 1
        metadata["resourceVersion"] = self._next_version()

    def _current(self, request: rendering.Request) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects:
            return None
        found = self._objects[key]
        return None if found.deleted else found.raw

    async def _mark_terminating(self, request: rendering.Request) -> dict[str, Any] | None:
        """A Pod deleted with a grace period keeps running, marked, until deleted with no grace.

        KMock deletes an object with a ``deletionTimestamp`` once it has no
        finalizers, so a terminating Pod carries :data:`TERMINATING` (and
        loses it when deleted with no grace); nothing else sees it.
        """
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        found = self._objects[key]
        metadata = found.raw["metadata"]
        options = request.data if isinstance(request.data, dict) else {}
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = (found.raw.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        finalizers = [f for f in metadata.get("finalizers") or () if f != TERMINATING]
        if not grace:
            if metadata.get("deletionTimestamp"):
                found.patch({"metadata": {"finalizers": finalizers or None}})
            return None
        if not metadata.get("deletionTimestamp"):
            async with self._lock:
                found.patch({"metadata": {"deletionTimestamp": _now(), "deletionGracePeriodSeconds": grace,
                                          "finalizers": [*finalizers, TERMINATING],
                                          "resourceVersion": self._next_version()}})  # fmt: skip
                await self._buses[request.resource].put({"type": "MODIFIED", "object": found.raw})
        return found.raw


pytestmark = pytest.mark.kmock(cls=ApiServer)


def declare_resources(server: kmock.KubernetesEmulator) -> None:
    for name, info in RESOURCES.items():
        server.resources[name] = kmock.ResourceInfo(verbs=VERBS, **info)


def live_objects(
    server: kmock.KubernetesEmulator, plural: str, namespace: str | None = None
) -> list[dict[str, Any]]:
    """The objects of a resource that exist now (not deleted), in any or one namespace."""
    found = []
    for (resource, object_namespace, _), item in server.objects.items():
        if resource.plural == plural and not item.deleted and namespace in (None, object_namespace):
            found.append(item.raw)
    return sorted(found, key=lambda item: item["metadata"]["name"])


def credentials(server: kmock.KubernetesEmulator) -> KubeCredentials:
    """What a test's scheduler uses to reach the emulator (any token will do)."""
    return KubeCredentials(server=str(server.url).rstrip("/"), token="test")


@contextlib.asynccontextmanager
async def connected(server: kmock.KubernetesEmulator) -> AsyncIterator[KubeApi]:
    """The emulator with nsfl's resources declared, and a client of it."""
    declare_resources(server)
    client = KubeApi(credentials(server))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def api(kmock: ApiServer) -> AsyncIterator[KubeApi]:
    async with connected(kmock) as client:
        yield client


class Kubelet:
    """What the kubelet would write about a coordinator Pod, driven by the test."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.api.get(PODS, namespace, name)

    async def token(self, namespace: str, pod: str) -> str:
        """The coordinator token its Pod reads from its Secret (``NSFL_COORDINATOR_TOKEN``)."""
        secret = await self.api.get(SECRETS, namespace, pod)
        return base64.b64decode(secret["data"]["token"]).decode()

    async def running(self, namespace: str, name: str, *, ready: bool = True) -> None:
        await self._status(namespace, name, {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "coordinator", "ready": ready,
                                   "state": {"running": {"startedAt": _now()}}}],
        })  # fmt: skip

    async def terminated(
        self, namespace: str, name: str, exit_code: int, *, reason: str = "", message: str = ""
    ) -> None:
        """The container ended with ``exit_code``; a Pod marked for deletion is then removed."""
        await self._status(namespace, name, {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "coordinator", "ready": False, "state": {
                "running": None,
                "terminated": {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0
                                                                           else "Error"),
                               "message": message, "finishedAt": _now()}}}],
        })  # fmt: skip
        if (await self.pod(namespace, name))["metadata"].get("deletionTimestamp"):
            await self.api.delete(PODS, namespace, name, grace_seconds=0)

    async def evicted(self, namespace: str, name: str) -> None:
        await self._status(namespace, name, {
            "phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory.",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "coordinator", "ready": False, "state": {
                "running": None, "terminated": {"exitCode": 137, "reason": "Error"}}}],
        })  # fmt: skip

    async def _status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self.api.patch(PODS, namespace, name, {"status": dict(status)}, subresource="status")


# --- the emulator itself -----------------------------------------------------------------------


def federated_job(name: str = "mnist", namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    body = {"runtime": "pytorch", "taskEntry": "train", "rounds": 2, "clientsPerRound": 2, **spec}
    return {"apiVersion": "nsfl.io/v1alpha1", "kind": "FederatedJob",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}  # fmt: skip


async def test_created_objects_get_a_uid_a_generation_and_a_resource_version(api: KubeApi) -> None:
    created = await api.create(FEDERATED_JOBS, "team-a", federated_job())
    metadata = created["metadata"]
    assert uuid.UUID(metadata["uid"]) and metadata["generation"] == 1 and metadata["resourceVersion"]
    again = await api.get(FEDERATED_JOBS, "team-a", "mnist")
    assert again["metadata"]["uid"] == metadata["uid"]


async def test_a_spec_change_bumps_the_generation_and_a_status_patch_does_not(api: KubeApi) -> None:
    await api.create(FEDERATED_JOBS, "team-a", federated_job())
    after_status = await api.patch(FEDERATED_JOBS, "team-a", "mnist", {"status": {"state": "QUEUED"},
                                                                         "spec": {"rounds": 9}},
                                   subresource="status")  # fmt: skip
    assert after_status["status"] == {"state": "QUEUED"} and after_status["spec"]["rounds"] == 2
    assert after_status["metadata"]["generation"] == 1
    after_spec = await api.patch(
        FEDERATED_JOBS, "team-a", "mnist", {"spec": {"rounds": 3}, "status": {"x": 1}}
    )
    assert after_spec["metadata"]["generation"] == 2 and after_spec["status"] == {"state": "QUEUED"}
    same = await api.patch(FEDERATED_JOBS, "team-a", "mnist", {"spec": {"rounds": 3}})
    assert same["metadata"]["generation"] == 2
    assert int(same["metadata"]["resourceVersion"]) > int(after_spec["metadata"]["resourceVersion"])


async def test_a_pod_deleted_with_grace_is_marked_until_deleted_without(api: KubeApi) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-a"},
           "spec": {"terminationGracePeriodSeconds": 30}}  # fmt: skip
    created = await api.create(PODS, "team-a", pod)
    assert created["status"] == {"phase": "Pending"}
    assert await api.delete(PODS, "team-a", "p")
    marked = await api.get(PODS, "team-a", "p")
    assert marked["metadata"]["deletionTimestamp"]
    assert await api.delete(PODS, "team-a", "p", grace_seconds=0)
    with pytest.raises(NotFound):
        await api.get(PODS, "team-a", "p")


async def test_lists_are_filtered_by_label(api: KubeApi, kmock: ApiServer) -> None:
    services = Resource("", "v1", "services")
    for name, labels in (("a", {"x": "1"}), ("b", {"x": "2"})):
        await api.create(services, "team-a", {"apiVersion": "v1", "kind": "Service",
                                              "metadata": {"name": name, "labels": labels}})  # fmt: skip
    assert [s["metadata"]["name"] for s in await api.list(services, "team-a", labels={"x": "2"})] == ["b"]
    assert [s["metadata"]["name"] for s in live_objects(kmock, "services")] == ["a", "b"]
