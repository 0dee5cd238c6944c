"""Reading jobs, their rounds and checkpoints from the store, and how REST shows them.

Reads go to the store directly rather than through the scheduler: the
scheduler writes every job change to the store before acting on it
(DESIGN §4), so the store is the truth, and a listing does not add load to
the component that runs the jobs.  Every change still goes through the
scheduler.

What REST shows of a job is :func:`job_view`: the stored document (whose
shape ``job_scheduler.documents`` writes down) with its store ``version``
(the token for optimistic concurrency) and without anything secret.  The
coordinator part of a job document relates to credentials (the scheduler
keeps only a digest of the coordinator's token, but a future field might
not); DESIGN §9 keeps secrets out of every response, so any key that looks
like one is dropped at any depth, whatever component added it.

Pages are keyset pages over the job name (``name > last``), not offsets:
a job created or deleted while a caller pages does not shift the pages
after it.  The page token is opaque to callers (base64 of the last name).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, TypedDict

from libs.errors import NotFound, ValidationFailed
from libs.records import (
    CHECKPOINTS,
    JOBS,
    ROUNDS,
    JobDocument,
    JobState,
    RoundRecord,
    as_checkpoint,
    as_round_record,
    checkpoint_key,
    job_key,
)
from libs.store import Document, DocumentStore, Where

STATES = tuple(state.value for state in JobState)
# DESIGN §4: a spec may change only where no coordinator runs with the old one.  The scheduler
# decides; this copy only answers early, without a round trip, in the common case.
UPDATABLE_STATES = frozenset(
    state.value
    for state in (JobState.QUEUED, JobState.PENDING, JobState.FINISHED, JobState.FAILED, JobState.STOPPED)
)
_SECRET_KEY = re.compile(r"token|secret|password|credential|private|apikey", re.IGNORECASE)


class JobView(JobDocument, total=False):
    """A job as REST shows it (``Job`` in ``/openapi.json``): the stored document, minus secrets."""

    version: int  # the store's version: the token for optimistic concurrency (expectedVersion)


class CheckpointView(TypedDict):
    """A checkpoint as REST lists it (its object key stays inside)."""

    round: int | None
    sha256: str | None
    size: int | None
    createdAt: float | None


def without_secrets(value: Any) -> Any:
    """A copy of ``value`` without any mapping entry whose key looks like a secret."""
    if isinstance(value, Mapping):
        return {k: without_secrets(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, list):
        return [without_secrets(item) for item in value]
    return value


def job_view(data: Mapping[str, Any], version: int | None = None) -> JobView:
    """The job document as stored by the scheduler (its shape is the scheduler's contract), minus secrets."""
    view: JobView = without_secrets(data)
    if version is not None:
        view["version"] = version
    return view


def encode_page_token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_page_token(token: str | None) -> str | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        decoded = None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("after"), str):
        raise ValidationFailed(
            "query.pageToken: is not a page token from this API; pass nextPageToken from the previous page",
            details={"errors": [{"path": "query.pageToken", "message": "not a valid page token"}]},
        )
    return str(decoded["after"])


async def get_job(store: DocumentStore, namespace: str, name: str) -> Document:
    document = await store.try_get(JOBS, job_key(namespace, name))
    if document is None:
        raise NotFound(f"job {name!r} not found in namespace {namespace!r}", details={"job": name})
    return document


async def list_jobs(
    store: DocumentStore, namespace: str, *, states: list[str], limit: int, after: str | None
) -> tuple[list[JobView], str | None]:
    where: dict[str, object] = {"namespace": namespace}
    if states:
        where["state"] = {"$in": states}
    if after is not None:
        where["name"] = {"$gt": after}
    documents = await store.find(JOBS, where, order_by=[("name", 1)], limit=limit + 1)
    page = [job_view(d.data, d.version) for d in documents[:limit]]
    next_token = encode_page_token(str(page[-1].get("name"))) if len(documents) > limit else None
    return page, next_token


async def job_rounds(
    store: DocumentStore, namespace: str, name: str, *, since: int, limit: int
) -> list[RoundRecord]:
    """Per-round records after round ``since``, in round order."""
    where: Where = {"namespace": namespace, "job": name, "round": {"$gt": since}}
    documents = await store.find(ROUNDS, where, order_by=[("round", 1)], limit=limit)
    return [as_round_record(without_secrets(d.data)) for d in documents]


def checkpoint_view(data: Mapping[str, Any]) -> CheckpointView:
    checkpoint = as_checkpoint(data)
    return {
        "round": checkpoint.get("round"),
        "sha256": checkpoint.get("sha256"),
        "size": checkpoint.get("size"),
        "createdAt": checkpoint.get("createdAt"),
    }


async def job_checkpoints(store: DocumentStore, namespace: str, name: str) -> list[CheckpointView]:
    documents = await store.find(CHECKPOINTS, {"jobId": job_key(namespace, name)}, order_by=[("round", 1)])
    return [checkpoint_view(d.data) for d in documents if d.data.get("namespace", namespace) == namespace]


async def contributing_clients(store: DocumentStore, namespace: str, name: str) -> list[str]:
    """Every client whose update was accepted in some round of the job (the model's lineage)."""
    clients: set[str] = set()
    for document in await store.find(ROUNDS, {"namespace": namespace, "job": name}):
        accepted = as_round_record(document.data).get("accepted")
        if isinstance(accepted, list):
            clients.update(str(c) for c in accepted)
    return sorted(clients)


async def require_checkpoint(
    store: DocumentStore, namespace: str, job: str, round_number: int | None
) -> None:
    """``NotFound`` unless the job has the checkpoint (any, when ``round_number`` is None)."""
    if round_number is not None:
        found = await store.try_get(CHECKPOINTS, checkpoint_key(namespace, job, round_number))
    else:
        matches = await store.find(CHECKPOINTS, {"jobId": job_key(namespace, job)}, limit=1)
        found = matches[0] if matches else None
    if found is None:
        at = f" at round {round_number}" if round_number is not None else ""
        raise NotFound(f"job {job!r} has no checkpoint{at} in namespace {namespace!r}")
