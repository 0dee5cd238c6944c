"""Adapter: the scheduler's jobs, rounds and checkpoint records in the document store.

Every state change goes through :meth:`JobStore.apply`: read the job, ask
:func:`~job_scheduler.states.next_state` what the event does, write the new
document with compare-and-set on the version read, and only then return, so
the caller acts on a transition that is already persisted (DESIGN §4).  A
lost compare-and-set (another writer got there first) is retried from a
fresh read, which re-decides the transition: an event that meanwhile became
a no-op (the job is already where it leads) comes back ``changed=False``
and the caller does nothing.  That is what makes retried RPCs, duplicated
reports and a scheduler restarting halfway through an action harmless.

Within one scheduler process, :class:`JobLocks` serialises the actions on
one job (persist, then launch or signal), so two tasks of this process never
interleave their side effects on the same job; compare-and-set still guards
against every other writer.

Every job document is written here and nowhere else, so this is where
others learn that a job changed: each :class:`JobListener` hears the key
after the write is persisted (the Kubernetes mode uses it to keep each
``FederatedJob``'s ``.status`` in step).  Listeners are plain callbacks that
must only take note; the work happens in their own task, so a slow API
server never holds up a transition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from job_scheduler.documents import round_document, state_of, with_transition
from job_scheduler.outcomes import Step
from job_scheduler.states import JobEvent, JobState, Transition, next_state
from libs.errors import AlreadyExists, NotFound, VersionConflict
from libs.records import (
    CHECKPOINTS,
    JOBS,
    ROUNDS,
    CheckpointRecord,
    JobDocument,
    RoundRecord,
    as_checkpoint,
    as_job,
    job_key,
    round_record_key,
)
from libs.store import Document, DocumentStore, Where

Change = Callable[[JobDocument], JobDocument]
"""A rewrite of a job document (a pure function: it returns a new document)."""
MAX_ATTEMPTS = 10


class JobLocks:
    """One :class:`asyncio.Lock` per job key, for this process's actions on that job."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def __call__(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def forget(self, key: str) -> None:
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]


class JobListener(Protocol):
    """Told the key of each job document written or deleted, after the fact."""

    def job_changed(self, key: str) -> None: ...

    def job_removed(self, key: str) -> None: ...


class JobStore:
    def __init__(self, documents: DocumentStore, clock: Callable[[], float]) -> None:
        self.documents = documents
        self.clock = clock
        self._listeners: list[JobListener] = []

    def add_listener(self, listener: JobListener) -> None:
        self._listeners.append(listener)

    # --- reading ------------------------------------------------------------------------------

    async def get(self, namespace: str, name: str) -> Document:
        document = await self.documents.try_get(JOBS, job_key(namespace, name))
        if document is None:
            raise NotFound(
                f"job {namespace}/{name} not found", details={"namespace": namespace, "name": name}
            )
        return document

    async def try_get(self, key: str) -> Document | None:
        return await self.documents.try_get(JOBS, key)

    async def find(
        self, where: Where | None = None, *, limit: int | None = None, offset: int = 0
    ) -> list[Document]:
        """Jobs matching ``where``, oldest first (then by key, so pages are stable)."""
        return await self.documents.find(JOBS, where, order_by=[("createdAt", 1)], limit=limit, offset=offset)

    async def in_states(self, states: Iterable[JobState]) -> list[Document]:
        return await self.find({"state": {"$in": [state.value for state in states]}})

    async def checkpoint_records(self, namespace: str, name: str) -> list[CheckpointRecord]:
        found = await self.documents.find(
            CHECKPOINTS, {"jobId": job_key(namespace, name)}, order_by=[("round", 1)]
        )
        return [as_checkpoint(document.data) for document in found]

    # --- writing ------------------------------------------------------------------------------

    async def create(self, data: JobDocument) -> Document:
        namespace, name = str(data["namespace"]), str(data["name"])
        try:
            document = await self.documents.insert(JOBS, job_key(namespace, name), data)
        except AlreadyExists:
            raise AlreadyExists(
                f"job {namespace}/{name} already exists; delete it first or choose another name",
                details={"namespace": namespace, "name": name},
            ) from None
        self._changed(document.key)
        return document

    async def apply(
        self,
        key: str,
        event: JobEvent,
        reason: str,
        *,
        clients_ready: bool = True,
        change: Change | None = None,
        expected_version: int | None = None,
    ) -> tuple[Document, Transition]:
        """Persist what ``event`` does to the job (and ``change``, in the same write); see the module doc.

        With ``expected_version`` a concurrent change is the caller's
        ``VersionConflict``, not retried.  ``InvalidState`` if the event is not
        allowed in the job's state; ``NotFound`` if the job is gone.
        """
        for _ in range(MAX_ATTEMPTS):
            document = await self._read(key)
            if expected_version is not None and document.version != expected_version:
                raise VersionConflict(
                    f"job {key} is at version {document.version}, not {expected_version}; read it again",
                    details={"current_version": document.version},
                )
            transition = next_state(
                state_of(as_job(document.data)),
                event,
                reason=reason,
                now=self.clock(),
                clients_ready=clients_ready,
            )
            if not transition.changed:
                return document, transition
            data = with_transition(as_job(document.data), transition)
            if change is not None:
                data = change(data)
            try:
                saved = await self.documents.replace(JOBS, key, data, expected_version=document.version)
            except VersionConflict:
                if expected_version is not None:
                    raise
                continue
            self._changed(key)
            return saved, transition
        raise VersionConflict(f"job {key} kept changing; retry", details={"key": key})

    async def apply_steps(self, key: str, steps: Sequence[Step], *, change: Change | None = None) -> Document:
        """Apply several events in order (each persisted); ``change`` goes with the last one."""
        if not steps:
            return await self._read(key)
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            document, _ = await self.apply(key, step.event, step.reason, change=change if last else None)
        return document

    async def change(self, key: str, change: Change) -> Document:
        """Rewrite the job with ``change`` (no state change), compare-and-set with retries."""
        for _ in range(MAX_ATTEMPTS):
            document = await self._read(key)
            data = change(as_job(dict(document.data)))
            if data == document.data:
                return document
            try:
                saved = await self.documents.replace(JOBS, key, data, expected_version=document.version)
            except VersionConflict:
                continue
            self._changed(key)
            return saved
        raise VersionConflict(f"job {key} kept changing; retry", details={"key": key})

    async def record_round(self, namespace: str, name: str, round_number: int, record: RoundRecord) -> None:
        await self.documents.upsert(
            ROUNDS,
            round_record_key(namespace, name, round_number),
            round_document(namespace, name, round_number, record),
        )

    async def forget_records(self, namespace: str, name: str) -> tuple[int, int]:
        """Delete the job's round and checkpoint records; returns how many of each."""
        rounds = await self.documents.delete_many(ROUNDS, {"namespace": namespace, "job": name})
        checkpoints = await self.documents.delete_many(CHECKPOINTS, {"jobId": job_key(namespace, name)})
        return rounds, checkpoints

    async def delete(self, key: str) -> bool:
        deleted = await self.documents.delete(JOBS, key)
        if deleted:
            for listener in self._listeners:
                listener.job_removed(key)
        return deleted

    def _changed(self, key: str) -> None:
        for listener in self._listeners:
            listener.job_changed(key)

    async def _read(self, key: str) -> Document:
        document = await self.documents.try_get(JOBS, key)
        if document is None:
            raise NotFound(f"job {key} not found", details={"key": key})
        return document
