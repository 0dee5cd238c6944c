"""The job document and the round record: their shape, built and changed by pure functions.

The API server reads these documents straight from the store (collections
``jobs``, ``rounds``, ``checkpoints``), so their shape is a contract; it is
written down once here::

    jobs/<ns>/<name>:
      namespace, name, spec (validated, defaults written), state, reason, priority,
      createdAt, updatedAt, queuedAt, startedAt, endedAt, pendingDeadline, stopRequestedAt,
      transitions: [{from, to, event, reason, at}]           (the last 100)
      status: {round, rounds, progress (percent), participants, lastMetrics, trainMetrics, privacy (DP jobs),
               checkpoints: [{round, key, sha256}]  (the latest 10; all of them: the checkpoints collection),
               checkpointCount (checkpoints reported), finalModel: {key, sha256, size} | null}
      coordinator: {name, endpoint, launches, launchedAt, restarts, lastExit, tokenSha256}
      startFromScratch, deleteRequested
      resourceUid       (Kubernetes mode: the uid of the FederatedJob the job was applied as, if any)
    rounds/<ns>/<name>#<round:06d>: the coordinator's round record + {namespace, job, round}

Every function returns a new dict and leaves its input alone, so a caller
can retry a compare-and-set from the document it read.

Two choices worth knowing.  Transitions that leave the state where it was
(ROUND_DONE in RUNNING, UPDATE, LAUNCHED while STOPPING) are persisted like
any other but not added to ``transitions`` and do not replace ``reason``:
a 500-round job would otherwise push its real history out of the last 100
entries.  A RELAUNCH (STARTING to STARTING) is kept: a crash is history.
And the coordinator's token is stored only as its SHA-256, so the secret
never reaches a reader of the store.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

from job_scheduler.platform import coordinator_name
from job_scheduler.states import JobEvent, JobState, Transition, is_terminal
from libs.errors import ValidationFailed
from libs.jobspec import JobSpec
from libs.json_values import JsonObject
from libs.records import (
    CheckpointRecord,
    JobDocument,
    JobStatus,
    ListedCheckpoint,
    RoundRecord,
    TransitionEntry,
)
from libs.store import Document

MAX_TRANSITIONS = 100
MAX_LISTED_CHECKPOINTS = 10
_KEPT_IN_HISTORY = frozenset({JobEvent.RELAUNCH})


def parse_job_id(job_id: str) -> tuple[str, str]:
    """``"<ns>/<name>"`` as ``(ns, name)``; ``ValidationFailed`` otherwise."""
    namespace, sep, name = job_id.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValidationFailed(f"a job id is <namespace>/<name>, got {job_id[:140]!r}")
    return namespace, name


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def state_of(job: JobDocument | Mapping[str, Any]) -> JobState:
    """The job's state (of a typed document, or of ``data`` as the store returns it)."""
    return JobState(job["state"])


def spec_of(job: JobDocument | Mapping[str, Any]) -> JobSpec:
    """The job's spec, typed (the document holds it as JSON: ``JobSpec.to_document``)."""
    return JobSpec.from_document(job["spec"])


def initial_status(spec: JobSpec) -> JobStatus:
    return {
        "round": 0,
        "rounds": spec.rounds,
        "progress": 0.0,
        "participants": [],
        "lastMetrics": {},
        "trainMetrics": {},
        "checkpoints": [],
        "checkpointCount": 0,
        "finalModel": None,
    }


def new_job(spec: JobSpec, now: float) -> JobDocument:
    """The document of a job just submitted (QUEUED)."""
    namespace, name = spec.namespace, spec.name
    reason = "submitted"
    return {
        "namespace": namespace, "name": name, "spec": spec.to_document(),
        "state": JobState.QUEUED.value, "reason": reason, "priority": spec.priority,
        "createdAt": now, "updatedAt": now, "queuedAt": now, "startedAt": None, "endedAt": None,
        "pendingDeadline": None, "stopRequestedAt": None,
        "transitions": [{"from": None, "to": JobState.QUEUED.value, "event": "SUBMIT", "reason": reason,
                         "at": now}],
        "status": initial_status(spec),
        "coordinator": {"name": coordinator_name(namespace, name), "endpoint": "", "launches": 0,
                        "launchedAt": None, "restarts": 0, "lastExit": None, "tokenSha256": ""},
        "startFromScratch": False, "deleteRequested": False,
    }  # fmt: skip


def with_transition(job: JobDocument, transition: Transition) -> JobDocument:
    """``job`` after ``transition`` (which must have ``changed``): state, reason, times, history."""
    data = copy.deepcopy(job)
    source, target, at = transition.state, transition.to, transition.at
    data["updatedAt"] = at
    data["state"] = target.value
    if source is target and transition.event not in _KEPT_IN_HISTORY:
        return data
    data["reason"] = transition.reason
    entry: TransitionEntry = {
        "from": source.value,
        "to": target.value,
        "event": transition.event.value,
        "reason": transition.reason,
        "at": at,
    }
    data["transitions"] = [*data.get("transitions", []), entry][-MAX_TRANSITIONS:]
    if target is JobState.STARTING and source in (JobState.QUEUED, JobState.PENDING):
        data["startedAt"] = at
    if source is JobState.PENDING:
        data["pendingDeadline"] = None
    if target is JobState.STOPPING:
        data["stopRequestedAt"] = at
    if is_terminal(target):
        data["endedAt"] = at
    if target is JobState.QUEUED:
        data["queuedAt"] = at
        data["startedAt"] = data["endedAt"] = data["stopRequestedAt"] = None
    return data


def with_round(
    job: JobDocument,
    round_number: int,
    rounds: int,
    record: RoundRecord | None,
    revised: Sequence[RoundRecord] = (),
) -> JobDocument:
    """``job`` with its status at ``round_number`` of ``rounds`` (and that round's record, if any).

    ``revised`` are earlier rounds' records reported again with their evaluation (which rode on a
    later round's tasks): the latest evaluation among them and ``record`` is the job's last metrics.
    """
    data = copy.deepcopy(job)
    status = data.setdefault("status", {})
    for earlier in sorted(revised, key=lambda r: int(r.get("round") or 0)):
        if earlier.get("evaluation"):
            status["lastMetrics"] = dict(storable(earlier)["evaluation"])
    rounds = rounds or int(status.get("rounds") or spec_of(data).rounds)
    status["round"] = round_number
    status["rounds"] = rounds
    status["progress"] = round(100.0 * round_number / rounds, 2) if rounds else 0.0
    if record:
        safe = storable(record)
        status["participants"] = list(safe.get("accepted", []))
        status["trainMetrics"] = dict(safe.get("trainMetrics") or {})
        if safe.get("evaluation"):
            status["lastMetrics"] = dict(safe["evaluation"])
        if safe.get("privacy"):  # a DP job: the privacy spent so far (coordinator.privacy_accounting)
            status["privacy"] = dict(safe["privacy"])
    return data


def _listed(record: CheckpointRecord | ListedCheckpoint) -> ListedCheckpoint:
    """How a row of the ``checkpoints`` collection is listed in a job's status."""
    return {"round": record.get("round"), "key": record.get("key"), "sha256": record.get("sha256")}


def with_checkpoints(job: JobDocument, records: Sequence[CheckpointRecord]) -> JobDocument:
    """``job`` whose status lists the latest of ``records`` (all rows of the ``checkpoints`` collection)."""
    data = copy.deepcopy(job)
    ordered = sorted(records, key=lambda r: int(r.get("round", 0)))
    status = data.setdefault("status", {})
    status["checkpoints"] = [_listed(r) for r in ordered][-MAX_LISTED_CHECKPOINTS:]
    status["checkpointCount"] = len(ordered)
    return data


def with_checkpoint(job: JobDocument, record: CheckpointRecord) -> JobDocument:
    """``job`` whose status lists ``record`` (a row of the ``checkpoints`` collection) among its latest.

    Only the latest ``MAX_LISTED_CHECKPOINTS`` are listed, in round order, beside a count: the job
    document is read and written on every report, and must not grow with the job's rounds (the
    ``checkpoints`` collection has them all).  A checkpoint of a round already listed replaces it.
    """
    data = copy.deepcopy(job)
    status = data.setdefault("status", {})
    listed = {int(c.get("round") or 0): c for c in status.get("checkpoints") or []}
    number = int(record.get("round") or 0)
    if number not in listed:
        status["checkpointCount"] = int(status.get("checkpointCount") or len(listed)) + 1
    listed[number] = _listed(record)
    status["checkpoints"] = [listed[n] for n in sorted(listed)][-MAX_LISTED_CHECKPOINTS:]
    return data


def restarted(job: JobDocument, *, from_scratch: bool) -> JobDocument:
    """``job`` made ready to run again: retries and exit forgotten; everything else too if from scratch."""
    data = copy.deepcopy(job)
    # A new token comes with the next launch; until then nothing may report, least of all the old
    # coordinator, whose late FAILED or STOPPED must not end the new run.
    data["coordinator"] = {**data["coordinator"], "restarts": 0, "lastExit": None, "tokenSha256": ""}
    data["startFromScratch"] = from_scratch
    status = data.get("status", {})
    if from_scratch:
        data["status"] = initial_status(spec_of(data))
    else:
        data["status"] = {**status, "finalModel": None, "rounds": spec_of(data).rounds}
    return data


def round_document(namespace: str, name: str, round_number: int, record: RoundRecord) -> RoundRecord:
    """What the ``rounds`` collection holds for one round: the coordinator's record, plus its ids."""
    document: RoundRecord = storable(record)
    return {**document, "namespace": namespace, "job": name, "round": round_number}


class PublicJob(JobDocument, total=False):
    """A job as the scheduler's RPCs return it: the stored document plus its store version."""

    version: int


def public(document: Document) -> PublicJob:
    """A job as the RPCs return it: the stored document plus its store version."""
    return cast(PublicJob, {**document.data, "version": document.version})


def storable(value: Any) -> Any:
    """``value`` made acceptable to every store: object keys without ``.``/``$``, finite numbers.

    Round records come from the coordinator and carry client ids as object keys
    (``dropped``); a client id may contain a dot, which MongoDB and the store's
    rules refuse, so dots become underscores rather than losing the record.
    """
    if isinstance(value, Mapping):
        out: JsonObject = {}
        for key, item in value.items():
            safe = str(key).replace(".", "_").replace("\x00", "")
            if not safe or safe.startswith("$"):
                safe = f"_{safe}"
            out[safe] = storable(item)
        return out
    if isinstance(value, (list, tuple)):
        return [storable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
