"""What a ``FederatedJob`` asks of the scheduler: submit it, change its spec, delete it.

The kopf handlers (:mod:`job_scheduler.k8s_operator`, the only module that
knows kopf) pass each object here as a plain dict and translate what comes
back: ``None``/``True`` is done, an :class:`~libs.errors.NsflError` is a
permanent or a temporary failure.  Everything goes through
:class:`~job_scheduler.service.JobService`, exactly as a REST call would, so
the two ways in cannot drift apart.

Every method is idempotent, because kopf may call a handler again (after a
restart, or when its own patches come back as events):

- **Created or resumed.**  A job already in the store is left alone: it was
  submitted over REST (its object was made by the mirror) or before a
  restart.  Otherwise the spec is validated and submitted with the object's
  uid; "already exists" counts as done.  An invalid spec is written to
  ``.status`` (``state: FAILED``, the validation message as ``reason`` and
  ``specError``) and is a permanent failure: kopf does not retry it, and
  fixing the spec (an update) submits it.
- **Spec changed.**  Validated, then compared with the stored spec: equal
  (the mirror copied a REST update, or a change that only spells out a
  default) is nothing to do, which is what ends the REST -> object ->
  operator chain.  Otherwise it is :meth:`JobService.update`, with REST's
  rules: refused while a coordinator runs with the old spec.  A refusal is
  ``status.specError`` and a permanent failure; the object keeps what the
  user asked for, and the job keeps running what it was given.
- **Deleted** (behind kopf's finalizer).  The job is stopped at a safe
  point and cleaned up by the scheduler, as a REST delete; this returns
  ``False`` while that is under way, and kopf asks again later.  Only the
  job the object represents is touched (``k8s_mirror.belongs``): a newer
  job that reuses the name is not this object's to delete.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from job_scheduler.documents import state_of
from job_scheduler.k8s_api import FEDERATED_JOBS, KubeApi
from job_scheduler.k8s_mirror import belongs, changes, spec_of, terminating
from job_scheduler.service import JobService
from job_scheduler.states import JobState
from libs.errors import AlreadyExists, InvalidState, NotFound, ValidationFailed
from libs.k8s.status import FederatedJobStatus, SpecError
from libs.records import job_key
from libs.store import Document

log = logging.getLogger(__name__)

MAX_MESSAGE = 2048


class FederatedJobReconciler:
    def __init__(
        self,
        service: JobService,
        api: KubeApi,
        *,
        settled: Callable[[str], None] = lambda key: None,
        poll_seconds: float = 0.2,
        wait_seconds: float = 10.0,
    ) -> None:
        self._service = service
        self._api = api
        self._settled = settled
        self._poll_seconds = poll_seconds
        self._wait_seconds = wait_seconds

    async def ensure_submitted(self, body: Mapping[str, Any]) -> None:
        """``on.create`` and ``on.resume``: the object's job exists in the store afterwards."""
        namespace, name, uid = _identity(body)
        if terminating(body) or await self._job(namespace, name) is not None:
            return
        try:
            spec = spec_of(body)
            await self._service.submit(namespace, json.dumps(spec.to_document()), resource_uid=uid)
        except AlreadyExists:
            return
        except ValidationFailed as exc:
            await self._refuse(body, exc.message, job_exists=False)
            raise
        log.info("FederatedJob %s/%s submitted", namespace, name)
        await self._accepted(body)

    async def apply_spec(self, body: Mapping[str, Any]) -> None:
        """``on.update`` of ``spec``: the stored spec follows it where REST's rules allow."""
        namespace, name, _ = _identity(body)
        document = await self._job(namespace, name)
        if document is None:  # its first spec was refused; this one may do
            await self.ensure_submitted(body)
            return
        if not belongs(body, document.data):
            log.info(
                "FederatedJob %s/%s does not represent the stored job; ignoring its spec", namespace, name
            )
            return
        try:
            spec = spec_of(body)
        except ValidationFailed as exc:
            await self._refuse(body, f"the spec change was not applied: {exc.message}", job_exists=True)
            raise
        if spec.to_document() != document.data["spec"]:
            try:
                await self._service.update(namespace, name, json.dumps(spec.to_document()), 0)
            except (InvalidState, ValidationFailed) as exc:
                await self._refuse(body, f"the spec change was not applied: {exc.message}", job_exists=True)
                raise
            log.info("FederatedJob %s/%s: spec updated", namespace, name)
        await self._accepted(body)

    async def delete(self, body: Mapping[str, Any]) -> bool:
        """``on.delete``: stop and delete the job; ``True`` once it is gone (release the finalizer)."""
        namespace, name, _ = _identity(body)
        document = await self._job(namespace, name)
        if document is None or not belongs(body, document.data):
            return True
        job = document.data
        if state_of(job) is not JobState.DELETING and not job.get("deleteRequested"):
            try:
                await self._service.delete(namespace, name)
            except NotFound:
                return True
            log.info("FederatedJob %s/%s deleted: deleting its job", namespace, name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_seconds
        while loop.time() < deadline:
            if await self._job(namespace, name) is None:
                return True
            await asyncio.sleep(self._poll_seconds)
        return False

    # --- helpers ------------------------------------------------------------------------------

    async def _job(self, namespace: str, name: str) -> Document | None:
        try:
            return await self._service.get(namespace, name)
        except NotFound:
            return None

    async def _refuse(self, body: Mapping[str, Any], message: str, *, job_exists: bool) -> None:
        """Say in ``.status`` why the spec does not run (only the operator's own fields if a job runs)."""
        namespace, name, _ = _identity(body)
        generation = (body.get("metadata") or {}).get("generation")
        spec_error: SpecError = {
            "generation": generation,
            "message": message[:MAX_MESSAGE],
        }
        status: FederatedJobStatus = {"specError": spec_error}
        if not job_exists:
            status["state"] = JobState.FAILED.value
            status["reason"] = f"InvalidSpec: {message}"[:MAX_MESSAGE]
        if changes(body.get("status") or {}, status):
            await self._api.patch(FEDERATED_JOBS, namespace, name, {"status": status}, subresource="status")
        log.warning("FederatedJob %s/%s: %s", namespace, name, message)

    async def _accepted(self, body: Mapping[str, Any]) -> None:
        """The spec runs: drop an earlier refusal and let the mirror show the job."""
        namespace, name, _ = _identity(body)
        if (body.get("status") or {}).get("specError") is not None:
            patch = {"status": {"specError": None}}
            await self._api.patch(FEDERATED_JOBS, namespace, name, patch, subresource="status")
        self._settled(job_key(namespace, name))


def _identity(body: Mapping[str, Any]) -> tuple[str, str, str]:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace", "")), str(metadata.get("name", "")), str(metadata.get("uid", ""))
