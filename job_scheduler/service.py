"""What each ``JobControl`` call does, in plain values (the servicer only parses and answers).

Every mutation takes the job's lock, persists its transition, then acts:

- **submit** validates the spec (defaults written in) and stores it QUEUED;
  a duplicate name is ``AlreadyExists``.  The Kubernetes operator submits
  the same way, with the uid of the ``FederatedJob`` it came from.
- **update** changes the spec where no coordinator runs with the old one
  (QUEUED, PENDING, FINISHED, FAILED, STOPPED); ``expected_version`` (not 0)
  makes it compare-and-set.  Name and namespace cannot change.
- **start** runs a FINISHED/FAILED/STOPPED job again: from its latest
  checkpoint (the coordinator resumes by itself), or from scratch, which
  first deletes its checkpoints and round records.  ``startFromScratch``
  is persisted with the transition, so if the scheduler dies before the
  deletion is done, admission does it before launching.
- **stop** ends a QUEUED/PENDING job at once; a STARTING/RUNNING one goes
  STOPPING and its coordinator gets SIGTERM (it checkpoints and exits 3,
  then the supervisor records STOPPED).
- **delete** of a job without a coordinator (QUEUED, PENDING, FINISHED,
  FAILED, STOPPED) goes DELETING and is cleaned up at once; an active job is
  stopped first with ``deleteRequested`` set, and the supervisor deletes it
  when it has stopped.  Deleting a job that is DELETING is a no-op; a job
  that is gone is ``NotFound``.
- **report_progress** is the coordinator's call (see :mod:`.coordinators`).

``scope`` (the end user's namespaces, :mod:`.namespaces`) bounds ``submit``
and ``list`` when the call comes from a user through the API server; the
Kubernetes operator, acting for the cluster, passes none.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Sequence

from job_scheduler.cleanup import JobCleanup
from job_scheduler.coordinators import Coordinators
from job_scheduler.documents import new_job, parse_job_id, restarted, state_of
from job_scheduler.job_store import JobLocks, JobStore
from job_scheduler.namespaces import NamespaceScope
from job_scheduler.platform import Platform
from job_scheduler.reports import Report
from job_scheduler.states import JobEvent, JobState
from libs.errors import NsflError, PermissionDenied, ValidationFailed
from libs.jobspec import JobSpec, parse_spec_text
from libs.records import JobDocument, JobStatus, job_key
from libs.store import Document

log = logging.getLogger(__name__)

DEFAULT_PAGE = 100
MAX_PAGE = 1000


class JobService:
    def __init__(
        self,
        jobs: JobStore,
        coordinators: Coordinators,
        cleanup: JobCleanup,
        platform: Platform,
        locks: JobLocks,
        *,
        wake: Callable[[], None] = lambda: None,
        log_tail_lines: int = 100,
    ) -> None:
        self._jobs = jobs
        self._coordinators = coordinators
        self._cleanup = cleanup
        self._platform = platform
        self._locks = locks
        self._wake = wake
        self._log_tail_lines = log_tail_lines

    async def submit(
        self, namespace: str, spec_text: str, *, resource_uid: str = "", scope: NamespaceScope | None = None
    ) -> Document:
        """Store a new job QUEUED; ``resource_uid`` names the FederatedJob it was applied as."""
        spec = _spec_from(spec_text, namespace=namespace)
        if scope is not None and not scope.allows(spec.namespace):
            raise PermissionDenied(f"you may not create jobs in namespace {spec.namespace!r}")
        data = new_job(spec, self._jobs.clock())
        if resource_uid:
            data["resourceUid"] = resource_uid
        document = await self._jobs.create(data)
        log.info("job %s submitted", document.key)
        self._wake()
        return document

    async def get(self, namespace: str, name: str) -> Document:
        return await self._jobs.get(namespace, name)

    async def list(
        self,
        namespace: str,
        states: Sequence[str],
        limit: int,
        page_token: str,
        *,
        scope: NamespaceScope | None = None,
    ) -> tuple[list[Document], str]:
        """One page of jobs, of ``namespace`` (all if empty) within ``scope``; the next page's token."""
        where: dict[str, str | dict[str, list[str]]] = {}  # a store filter (libs.store.Where)
        if namespace:
            where["namespace"] = namespace
            if scope is not None and not scope.allows(namespace):
                where["namespace"] = {"$in": []}  # matches nothing: as if the namespace had no jobs
        elif scope is not None and not scope.everything:
            where["namespace"] = {"$in": sorted(scope.names)}
        if states:
            where["state"] = {"$in": [_state(s).value for s in states]}
        if limit < 0:
            raise ValidationFailed(f"limit must not be negative, got {limit}")
        size = min(limit or DEFAULT_PAGE, MAX_PAGE)
        offset = _offset(page_token)
        found = await self._jobs.find(where, limit=size + 1, offset=offset)
        next_token = _token(offset + size) if len(found) > size else ""
        return found[:size], next_token

    async def update(self, namespace: str, name: str, spec_text: str, expected_version: int) -> Document:
        spec = _spec_from(spec_text, namespace=namespace)
        if spec.name != name or spec.namespace != namespace:
            raise ValidationFailed(
                f"the spec names job {spec.job_id}, not {namespace}/{name}; a job cannot be renamed or moved",
                details={"errors": [{"path": "spec.name", "message": "must match the job being updated"}]},
            )

        def change(data: JobDocument) -> JobDocument:
            status: JobStatus = {**data.get("status", {}), "rounds": spec.rounds}
            return {**data, "spec": spec.to_document(), "priority": spec.priority, "status": status}

        key = job_key(namespace, name)
        async with self._locks(key):
            document, _ = await self._jobs.apply(
                key, JobEvent.UPDATE, "spec updated", change=change, expected_version=expected_version or None
            )
        self._wake()
        return document

    async def start(self, namespace: str, name: str, *, from_scratch: bool) -> Document:
        key = job_key(namespace, name)
        reason = "restarted from scratch" if from_scratch else "restarted from its latest checkpoint"
        async with self._locks(key):
            document, transition = await self._jobs.apply(
                key, JobEvent.START, reason, change=lambda d: restarted(d, from_scratch=from_scratch)
            )
            if transition.changed and from_scratch:
                await self._cleanup.forget_progress(namespace, name)
                document = await self._jobs.change(key, lambda d: {**d, "startFromScratch": False})
        self._wake()
        return document

    async def stop(self, namespace: str, name: str) -> Document:
        key = job_key(namespace, name)
        async with self._locks(key):
            document = await self._stop(key, deleting=False)
        self._wake()
        return document

    async def delete(self, namespace: str, name: str) -> Document:
        key = job_key(namespace, name)
        async with self._locks(key):
            document = await self._jobs.get(namespace, name)
            state = state_of(document.data)
            if state in (JobState.STARTING, JobState.RUNNING, JobState.STOPPING):
                return await self._stop(key, deleting=True)
            if state is not JobState.DELETING:
                document, _ = await self._jobs.apply(
                    key,
                    JobEvent.DELETE,
                    "deleted on request",
                    change=lambda d: {**d, "deleteRequested": True},
                )
            try:
                await self._cleanup.remove(namespace, name)
            except NsflError as exc:  # the supervisor finishes what is left
                log.warning("job %s: clean-up will be retried: %s", key, exc.message)
        self._locks.forget(key)
        return document

    async def logs(self, namespace: str, name: str, tail_lines: int) -> str:
        await self._jobs.get(namespace, name)
        if tail_lines < 0:
            raise ValidationFailed(f"tail_lines must not be negative, got {tail_lines}")
        return await self._platform.logs(namespace, name, tail_lines or self._log_tail_lines)

    async def report_progress(self, report: Report) -> tuple[bool, str]:
        namespace, name = parse_job_id(report.job_id)
        async with self._locks(job_key(namespace, name)):
            result = await self._coordinators.report(report)
        if report.state != JobState.RUNNING:
            self._wake()  # a slot may be free
        return result

    async def _stop(self, key: str, *, deleting: bool) -> Document:
        """STOP (with ``deleteRequested`` when deleting), then SIGTERM if a coordinator runs."""
        flag: JobDocument = {"deleteRequested": True} if deleting else {}
        document = await self._jobs.try_get(key)
        if document is not None and state_of(document.data) is JobState.STOPPING:
            return await self._jobs.change(key, lambda d: {**d, **flag}) if deleting else document
        reason = "deleted on request: stopping first" if deleting else "stopped on request"
        document, transition = await self._jobs.apply(
            key, JobEvent.STOP, reason, change=lambda d: {**d, **flag}
        )
        if transition.changed and transition.to is JobState.STOPPING:
            await self._coordinators.request_stop(document)
        return document


def _spec_from(text: str, *, namespace: str) -> JobSpec:
    """The validated spec of ``text``; the request's namespace fills or must match the spec's."""
    return JobSpec.parse(parse_spec_text(text, "spec.json"), namespace=namespace)


def _state(value: str) -> JobState:
    try:
        return JobState(value.upper())
    except ValueError:
        raise ValidationFailed(
            f"unknown job state {value[:40]!r}; states: {', '.join(s.value for s in JobState)}"
        ) from None


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _offset(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix == "offset" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise ValidationFailed("the page token is not valid; pass the next_page_token of the previous page")
