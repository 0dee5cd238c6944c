"""The stored documents every component shares: their collections, shapes, job states and exit codes.

Three components read and write the same documents (the scheduler writes
jobs and rounds, the coordinator checkpoints and reads models, the API
server reads them all and writes models), and talk to each other only
through the store, protos or REST.  So the shapes are a contract, stated
once here rather than in each component:

- the collection names (:data:`JOBS`, :data:`ROUNDS`, :data:`CHECKPOINTS`,
  :data:`MODELS`);
- :class:`JobState`, the states of DESIGN §4 (the transitions live with the
  scheduler, in ``job_scheduler.states``);
- :data:`EXIT_CODES`, the coordinator's exit code for each final state
  (docs/contracts.md): 0 FINISHED, 1 FAILED, 3 STOPPED;
- the documents as ``TypedDict``\\ s: they are JSON at the store's edge
  (``DocumentStore`` holds plain JSON objects), so a TypedDict types them
  without a conversion step that every reader and writer would have to
  keep in step.  ``total=False`` where older documents may lack a field.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypedDict, cast

from libs.json_values import JsonObject

JOBS = "jobs"
ROUNDS = "rounds"
CHECKPOINTS = "checkpoints"
MODELS = "models"


class JobState(StrEnum):
    QUEUED = "QUEUED"
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    DELETING = "DELETING"


EXIT_FINISHED = 0
EXIT_FAILED = 1
EXIT_STOPPED = 3
EXIT_CODES: Mapping[JobState, int] = MappingProxyType(
    {JobState.FINISHED: EXIT_FINISHED, JobState.FAILED: EXIT_FAILED, JobState.STOPPED: EXIT_STOPPED}
)
STATES_BY_EXIT_CODE: Mapping[int, JobState] = MappingProxyType(
    {code: state for state, code in EXIT_CODES.items()}
)


def exit_code_of(state: str) -> int | None:
    """The coordinator's exit code for a final ``state``; None for any other state."""
    try:
        return EXIT_CODES.get(JobState(state))
    except ValueError:
        return None


def job_key(namespace: str, name: str) -> str:
    """A job's key in :data:`JOBS`: ``<ns>/<name>``."""
    return f"{namespace}/{name}"


def round_record_key(namespace: str, name: str, round_number: int) -> str:
    """A round's key in :data:`ROUNDS`, sorted by round: ``<ns>/<name>#<round:06d>``."""
    return f"{namespace}/{name}#{round_number:06d}"


def checkpoint_key(namespace: str, name: str, round_number: int) -> str:
    """A checkpoint's key in :data:`CHECKPOINTS`: ``<ns>/<name>#<round:06d>``."""
    return f"{namespace}/{name}#{round_number:06d}"


def model_key(namespace: str, name: str) -> str:
    """A model's key in :data:`MODELS`: ``<ns>/<name>``."""
    return f"{namespace}/{name}"


TransitionEntry = TypedDict(
    "TransitionEntry", {"from": "str | None", "to": str, "event": str, "reason": str, "at": float}
)
"""One line of a job's history (``transitions``); ``from`` is None for the submission.

(The functional form, because ``from`` is a keyword.)"""


class ListedCheckpoint(TypedDict):
    """A checkpoint as a job's status lists it."""

    round: int | None
    key: str | None
    sha256: str | None


class FinalModel(TypedDict):
    key: str
    sha256: str
    size: int


class JobStatus(TypedDict, total=False):
    """``status`` of a job document (DP jobs add ``privacy``)."""

    round: int
    rounds: int
    progress: float
    participants: list[str]
    lastMetrics: dict[str, float]
    trainMetrics: dict[str, float]
    privacy: JsonObject  # the privacy spent so far, as the coordinator's accountant reports it
    checkpoints: list[ListedCheckpoint]
    checkpointCount: int
    finalModel: FinalModel | None


class LastExit(TypedDict):
    """How the job's previous coordinator ended (``coordinator.lastExit``), kept when it is relaunched."""

    launch: int
    code: int | None  # None: it died without an exit code the platform could tell
    state: str | None  # the state its last status.json gave
    at: float


class CoordinatorRecord(TypedDict):
    """``coordinator`` of a job document: the scheduler's view of the job's coordinator."""

    name: str
    endpoint: str
    launches: int
    launchedAt: float | None
    restarts: int
    lastExit: LastExit | None
    tokenSha256: str


class JobDocument(TypedDict, total=False):
    """A document of :data:`JOBS` (written by the scheduler; see ``job_scheduler.documents``)."""

    namespace: str
    name: str
    spec: JsonObject  # JobSpec.to_document(); read it with JobSpec.from_document
    state: str  # a JobState
    reason: str
    priority: int
    createdAt: float
    updatedAt: float
    queuedAt: float
    startedAt: float | None
    endedAt: float | None
    pendingDeadline: float | None
    stopRequestedAt: float | None
    transitions: list[TransitionEntry]
    status: JobStatus
    coordinator: CoordinatorRecord
    startFromScratch: bool
    deleteRequested: bool
    resourceUid: str


class RejectedTask(TypedDict):
    task: str
    reason: str


class RoundRecord(TypedDict, total=False):
    """A document of :data:`ROUNDS`: the coordinator's record of one train round, plus its ids.

    The coordinator builds it (``coordinator.driver``, from ``RoundBook.summary``) and keeps the
    job's history of them in status.json and in every checkpoint; the scheduler adds the ids
    (``namespace``, ``job``) when it stores one.  The coordinator may add algorithm fields
    (``privacy``, ``scaffold``, ``screened``, ``extender``, secure aggregation's stage counts),
    kept as they come.
    """

    namespace: str
    job: str
    round: int
    kind: str  # "train"
    attempt: int
    accepted: list[str]
    dropped: dict[str, str]  # client id -> why its task was dropped
    rejected: list[RejectedTask]
    closeReason: str
    clientSeconds: dict[str, float]  # client id -> seconds its script ran
    startedAt: float
    endedAt: float
    trainMetrics: dict[str, float]
    evaluation: dict[str, float]
    evaluatedAt: float  # when the evaluation came with the next round's updates (piggybacked)
    modelSha256: str
    samples: int


class CheckpointRecord(TypedDict):
    """A document of :data:`CHECKPOINTS`, written by the coordinator once the checkpoint verified."""

    jobId: str
    namespace: str
    job: str
    round: int
    key: str
    sha256: str
    size: int
    createdAt: float


class CoordinatorStatus(TypedDict, total=False):
    """A coordinator's ``status.json`` (docs/contracts.md): written by ``coordinator.progress``.

    The local platform reads it for the coordinator's endpoint and, once the process is gone, for
    the state its exit code stands for; the Kubernetes platform builds the same few fields
    (``state``, ``reason``) from the Pod.  Algorithms may add status fields of their own
    (``Step.status_fields``), kept as they come.
    """

    job_id: str
    state: str  # a JobState
    reason: str
    round: int
    rounds: int
    endpoint: str
    pid: int
    updated_unix: float
    history: list[RoundRecord]
    checkpoints: list[CheckpointRecord]
    final_model: FinalModel


class Lineage(TypedDict):
    """Which job, round and clients produced a model version (round None if the job recorded none)."""

    job: str
    round: int | None
    clients: list[str]


class ModelVersion(TypedDict):
    """One version in a model document's ``versions`` (keyed by the version number as a string)."""

    key: str
    sha256: str
    size: int
    createdAt: float
    description: str
    lineage: Lineage | None


class ModelDocument(TypedDict):
    """A document of :data:`MODELS` (the registry, written by the API server; read by coordinators)."""

    namespace: str
    name: str
    runtime: str
    description: str
    createdAt: float
    updatedAt: float
    latest: int | None
    nextVersion: int
    versions: dict[str, ModelVersion]


# The store's edge: a DocumentStore returns ``data`` as a plain JSON object.  These name which
# record it holds, so the reader sees the shape; they check nothing, because every writer of a
# collection writes through the type above (the contract the module docstring states).


def as_job(data: Mapping[str, Any]) -> JobDocument:
    """``data`` of a :data:`JOBS` document, as its type."""
    return cast(JobDocument, data)


def as_round_record(data: Mapping[str, Any]) -> RoundRecord:
    """``data`` of a :data:`ROUNDS` document, as its type."""
    return cast(RoundRecord, data)


def as_checkpoint(data: Mapping[str, Any]) -> CheckpointRecord:
    """``data`` of a :data:`CHECKPOINTS` document, as its type."""
    return cast(CheckpointRecord, data)


def as_model(data: Mapping[str, Any]) -> ModelDocument:
    """``data`` of a :data:`MODELS` document, as its type."""
    return cast(ModelDocument, data)


def as_coordinator_status(data: Mapping[str, Any]) -> CoordinatorStatus:
    """A coordinator's ``status.json``, read as a JSON object, as its type."""
    return cast(CoordinatorStatus, data)
