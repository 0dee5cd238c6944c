"""The scheduler's store, shown as ``FederatedJob`` objects: one object per job, its ``.status`` in step.

One source of truth per fact (DESIGN §8), and who writes what:

- **Job state and progress** (state, reason, round, progress, participants,
  metrics, checkpoints, final model) belong to the scheduler's store.  The
  object's ``.status`` only shows them: this mirror writes it, and nothing
  else writes those fields (:func:`libs.k8s.federatedjob_status_patch` says
  which).  The operator writes only ``status.specError`` (a spec change it
  refused) and, for an object whose spec never became a job, the state and
  reason that say why.
- **The spec that runs** belongs to the store too.  A spec changed with
  ``kubectl`` reaches the store through the operator under REST's update
  rules; a spec changed over REST is copied into the object here.  A change
  the operator refused is left in the object (it is the user's request, and
  ``status.specError`` says why it does not run), never reverted.
- **Existence.**  A job submitted over REST gets its object here (marked
  with the ``nsfl.io/job-created-at`` annotation); a job applied with
  ``kubectl`` was submitted with its object's uid (``resourceUid``).  Either
  mark ties an object to one incarnation of a job, so a deleted object's
  finalizer never deletes a newer job of the same name.  When a job leaves
  the store, its object is deleted; the operator's finalizer then finds the
  job gone and lets the object go.

**Why there is no update loop.**  The mirror is driven by the store
(:class:`~job_scheduler.job_store.JobListener`), never by watching objects,
and it writes ``.status`` (the status subresource, which cannot change the
spec) or, after a REST update, a spec equal to the stored one.  The
operator reacts only to spec changes, and does nothing when the object's
spec already equals the stored spec.  So every chain ends after one step:
store -> status; REST spec -> object spec -> (operator: equal, stop);
``kubectl`` spec -> store -> status.

Writes are coalesced: a listener call only marks the job dirty, and one
task syncs dirty jobs in turn (a burst of progress reports becomes one
patch).  A patch that would change nothing is not sent.  Every job is
compared again every ``resync_seconds`` (and once at start), which repairs
anything missed while the API server was unreachable or the scheduler was
down; failures are retried after ``retry_seconds``, never in a hot loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from job_scheduler.documents import parse_job_id, state_of
from job_scheduler.job_store import JobStore
from job_scheduler.k8s_api import FEDERATED_JOBS, KubeApi
from job_scheduler.states import JobState
from libs.errors import AlreadyExists, Unavailable, ValidationFailed
from libs.jobspec import API_VERSION, KIND, JobSpec, manifest_to_spec, spec_to_manifest
from libs.json_values import JsonObject
from libs.k8s import federatedjob_status_patch

log = logging.getLogger(__name__)

CREATED_AT_ANNOTATION = "nsfl.io/job-created-at"


def job_marker(job: Mapping[str, Any]) -> str:
    """What identifies one incarnation of a job (names are reused after a deletion)."""
    return repr(float(job.get("createdAt") or 0.0))


def belongs(federated_job: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """Whether the object represents this job document (by its uid, or by the mirror's mark)."""
    metadata = federated_job.get("metadata") or {}
    uid = job.get("resourceUid")
    if uid and metadata.get("uid") == uid:
        return True
    return (metadata.get("annotations") or {}).get(CREATED_AT_ANNOTATION) == job_marker(job)


def terminating(federated_job: Mapping[str, Any]) -> bool:
    return bool((federated_job.get("metadata") or {}).get("deletionTimestamp"))


def federatedjob_for(job: Mapping[str, Any]) -> JsonObject:
    """The object of a job submitted over REST: its stored spec, marked as this job's."""
    manifest = spec_to_manifest(job["spec"])
    manifest["metadata"]["annotations"] = {CREATED_AT_ANNOTATION: job_marker(job)}
    return manifest


def spec_of(federated_job: Mapping[str, Any]) -> JobSpec:
    """The validated spec an object asks for; ``ValidationFailed`` if it is not a valid job."""
    metadata = federated_job.get("metadata") or {}
    identity = {key: metadata[key] for key in ("name", "namespace", "labels") if key in metadata}
    manifest = {"apiVersion": API_VERSION, "kind": KIND, "metadata": identity,
                "spec": federated_job.get("spec") or {}}  # fmt: skip
    return JobSpec.parse(manifest_to_spec(manifest))


def runs_its_spec(federated_job: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """Whether the object's spec is the spec the job runs."""
    try:
        return spec_of(federated_job).to_document() == job.get("spec")
    except ValidationFailed:
        return False


def merge_patch(current: Any, desired: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``current`` into ``desired``."""
    if not isinstance(current, Mapping) or not isinstance(desired, Mapping):
        return desired
    patch = {key: merge_patch(current.get(key), value) for key, value in desired.items()
             if current.get(key) != value}  # fmt: skip
    patch.update({key: None for key in current if key not in desired})
    return patch


def changes(current: Any, patch: Any) -> bool:
    """Whether applying merge ``patch`` to ``current`` would change it."""
    if not isinstance(patch, Mapping):
        return bool(current != patch)
    if not isinstance(current, Mapping):
        return True
    for key, value in patch.items():
        if value is None:
            if current.get(key) is not None:
                return True
        elif changes(current.get(key), value):
            return True
    return False


def _spec_digest(spec: Any) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class FederatedJobMirror:
    """Syncs dirty jobs to their objects in one task (see the module doc)."""

    def __init__(
        self, api: KubeApi, jobs: JobStore, *, resync_seconds: float = 60.0, retry_seconds: float = 2.0
    ) -> None:
        self._api = api
        self._jobs = jobs
        self._resync_seconds = resync_seconds
        self._retry_seconds = retry_seconds
        self._dirty: set[str] = set()
        self._removed: set[str] = set()
        self._specs: dict[str, str] = {}  # job key -> digest of the stored spec last seen
        self._wake = asyncio.Event()

    # --- JobListener --------------------------------------------------------------------------

    def job_changed(self, key: str) -> None:
        self._dirty.add(key)
        self._wake.set()

    def job_removed(self, key: str) -> None:
        self._removed.add(key)
        self.job_changed(key)

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Sync every job, then dirty ones as they come and all of them every ``resync_seconds``."""
        next_resync = 0.0
        while True:
            if time.monotonic() >= next_resync:
                try:
                    self._dirty.update(document.key for document in await self._jobs.find())
                    next_resync = time.monotonic() + self._resync_seconds
                except Exception:
                    log.exception("cannot list the jobs to resync their FederatedJobs")
            failed = await self.sync_dirty()
            if failed:
                await asyncio.sleep(self._retry_seconds)
                continue
            self._wake.clear()
            if self._dirty:
                continue
            # asyncio.timeout, not wait_for, which on Python 3.11 can swallow a cancellation.
            try:
                async with asyncio.timeout(max(0.0, next_resync - time.monotonic())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def sync_dirty(self) -> int:
        """Sync every job marked dirty; those that fail stay dirty.  Returns how many failed."""
        batch, self._dirty = sorted(self._dirty), set()
        failed = 0
        for key in batch:
            try:
                await self.sync(key)
            except Exception as exc:
                failed += 1
                self._dirty.add(key)
                log.warning("FederatedJob of job %s: will try again: %s", key, exc)
        return failed

    # --- one job ------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        """Make the job's object exist (or not) and show the stored job."""
        namespace, name = parse_job_id(key)
        document = await self._jobs.try_get(key)
        federated_job = await self._api.try_get(FEDERATED_JOBS, namespace, name)
        if document is None:
            self._specs.pop(key, None)
            if key in self._removed and federated_job is not None and not terminating(federated_job):
                await self._api.delete(FEDERATED_JOBS, namespace, name)
                log.info("job %s was deleted: deleted its FederatedJob", key)
            self._removed.discard(key)
            return
        self._removed.discard(key)  # a newer job of the same name: its object is settled below
        job = document.data
        if federated_job is None:
            if state_of(job) is JobState.DELETING or job.get("deleteRequested"):
                return
            federated_job = await self._create(namespace, name, job)
        if not belongs(federated_job, job):
            if terminating(federated_job):
                raise Unavailable(f"an older FederatedJob {key} is still being deleted")
            federated_job = await self._adopt(namespace, name, federated_job, job)
        federated_job = await self._copy_spec(namespace, name, federated_job, job)
        await self._write_status(namespace, name, federated_job, job)

    async def _create(self, namespace: str, name: str, job: Mapping[str, Any]) -> JsonObject:
        try:
            created = await self._api.create(FEDERATED_JOBS, namespace, federatedjob_for(job))
        except AlreadyExists:
            return await self._api.get(FEDERATED_JOBS, namespace, name)
        log.info("job %s/%s: created its FederatedJob", namespace, name)
        self._specs[f"{namespace}/{name}"] = _spec_digest(job["spec"])
        return created

    async def _adopt(
        self, namespace: str, name: str, federated_job: Mapping[str, Any], job: Mapping[str, Any]
    ) -> JsonObject:
        """Mark an unclaimed object as this job's and give it the spec that runs."""
        desired = spec_to_manifest(job["spec"])
        patch = {
            "metadata": {"annotations": {CREATED_AT_ANNOTATION: job_marker(job)}},
            "spec": merge_patch(federated_job.get("spec") or {}, desired["spec"]),
        }
        log.info("job %s/%s: adopted the FederatedJob of the same name", namespace, name)
        return await self._api.patch(FEDERATED_JOBS, namespace, name, patch)

    async def _copy_spec(
        self, namespace: str, name: str, federated_job: JsonObject, job: Mapping[str, Any]
    ) -> JsonObject:
        """After the stored spec changed (a REST update), put it into the object too."""
        key = f"{namespace}/{name}"
        digest = _spec_digest(job["spec"])
        previous, self._specs[key] = self._specs.get(key), digest
        if previous is None or previous == digest or runs_its_spec(federated_job, job):
            return federated_job
        desired = spec_to_manifest(job["spec"])
        patch = {
            "metadata": {"labels": desired["metadata"].get("labels") or {}},
            "spec": merge_patch(federated_job.get("spec") or {}, desired["spec"]),
        }
        log.info("job %s: copied the updated spec into its FederatedJob", key)
        return await self._api.patch(FEDERATED_JOBS, namespace, name, patch)

    async def _write_status(
        self, namespace: str, name: str, federated_job: Mapping[str, Any], job: Mapping[str, Any]
    ) -> None:
        current = federated_job.get("status") or {}
        generation = (federated_job.get("metadata") or {}).get("generation")
        observed = generation if isinstance(generation, int) and runs_its_spec(federated_job, job) else None
        patch = federatedjob_status_patch(job, previous=current, observed_generation=observed)
        if changes(current, patch["status"]):
            await self._api.patch(FEDERATED_JOBS, namespace, name, patch, subresource="status")
