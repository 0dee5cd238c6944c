"""The ``.status`` of a FederatedJob, computed from the scheduler's job document.

One source of truth per fact (DESIGN §8): the scheduler's store owns job
state and progress; the custom resource only *shows* it, so ``kubectl get
fljobs`` and ``kubectl describe`` tell the same story as ``nsfl-ctl``.  The
operator calls :func:`federatedjob_status_patch` after every change of the
job document and sends the result as a JSON merge patch to the
``status`` subresource.  Nothing here reads the resource's ``.spec``, so a
status write can never loop back into a spec change.

What is copied is a fixed list of fields, never the document wholesale: the
document also holds the SHA-256 of the coordinator's token and the full
transition history, which have no business on an object every namespace
reader can see (DESIGN §9).  Lists are bounded (participants, checkpoints)
because an object in etcd must stay well under 1.5 MB.

Why ``previous``: a JSON merge patch *merges* objects, so a metric that
disappears from ``lastMetrics`` would linger from the last status forever.
Given the status the object has now, the patch sets such keys to ``null``,
which deletes them.  Top-level fields this module owns are always written,
``null`` when unknown, for the same reason.  Fields it does not own (kopf's
``status.kopf``) are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict

from libs.records import ListedCheckpoint

MAX_PARTICIPANTS = 100
MAX_CHECKPOINTS = 10
MAX_REASON = 2048
# Object-valued status fields: keys gone from the new value are deleted explicitly.
REPLACED_OBJECTS = ("lastMetrics", "trainMetrics", "finalModel", "coordinator")


class ShownFinalModel(TypedDict):
    key: str | None
    sha256: str | None
    size: int


class ShownCoordinator(TypedDict):
    name: str | None
    endpoint: str | None
    launches: int
    restarts: int


class SpecError(TypedDict):
    """Why the object's spec does not run (written by the operator, not by this module)."""

    generation: int | None
    message: str


class FederatedJobStatus(TypedDict, total=False):
    """A FederatedJob's ``.status`` as nsfl writes it (``deploy/.../crd-federatedjobs.yaml``).

    In a merge patch an object-valued field may also carry ``None`` for keys to delete
    (see :data:`REPLACED_OBJECTS`).
    """

    state: str | None
    reason: str | None
    round: int
    rounds: int
    roundText: str | None
    progress: str | None
    participants: list[str]
    participantCount: int
    lastMetrics: dict[str, float] | None
    trainMetrics: dict[str, float] | None
    checkpoints: list[ListedCheckpoint]
    finalModel: ShownFinalModel | None
    coordinator: ShownCoordinator | None
    startedAt: str | None
    endedAt: str | None
    updatedAt: str | None
    observedGeneration: int
    specError: SpecError | None


class StatusPatch(TypedDict):
    """A JSON merge patch of the ``status`` subresource."""

    status: FederatedJobStatus


def federatedjob_status_patch(
    job_doc: Mapping[str, Any],
    *,
    previous: Mapping[str, Any] | None = None,
    observed_generation: int | None = None,
) -> StatusPatch:
    """``{"status": {...}}``: the merge patch that makes a FederatedJob show ``job_doc``.

    ``job_doc`` is the scheduler's job document (``job_scheduler.documents``);
    ``previous`` the object's current ``.status``; ``observed_generation`` the
    ``metadata.generation`` whose spec the scheduler runs (else the document's
    ``observedGeneration``, else left as it is).
    """
    progress = _mapping(job_doc.get("status"))
    round_number = _int(progress.get("round"))
    rounds = _int(progress.get("rounds")) or _int(_mapping(job_doc.get("spec")).get("rounds"))
    coordinator = _mapping(job_doc.get("coordinator"))
    participants = [str(p) for p in progress.get("participants") or ()]
    status: FederatedJobStatus = {
        "state": _text(job_doc.get("state")),
        "reason": _text(job_doc.get("reason"), MAX_REASON),
        "round": round_number,
        "rounds": rounds,
        "roundText": f"{round_number}/{rounds}" if rounds else None,
        "progress": _progress_text(progress.get("progress"), round_number, rounds),
        "participants": participants[:MAX_PARTICIPANTS],
        "participantCount": len(participants),
        "lastMetrics": _metrics(progress.get("lastMetrics")),
        "trainMetrics": _metrics(progress.get("trainMetrics")),
        "checkpoints": _checkpoints(progress.get("checkpoints")),
        "finalModel": _final_model(progress.get("finalModel")),
        "coordinator": {
            "name": _text(coordinator.get("name")),
            "endpoint": _text(coordinator.get("endpoint")),
            "launches": _int(coordinator.get("launches")),
            "restarts": _int(coordinator.get("restarts")),
        } if coordinator else None,
        "startedAt": _timestamp(job_doc.get("startedAt")),
        "endedAt": _timestamp(job_doc.get("endedAt")),
        "updatedAt": _timestamp(job_doc.get("updatedAt")),
    }  # fmt: skip
    generation = observed_generation if observed_generation is not None else job_doc.get("observedGeneration")
    if isinstance(generation, int) and not isinstance(generation, bool):
        status["observedGeneration"] = generation
    if previous:
        status["lastMetrics"] = _replacing(status["lastMetrics"], previous.get("lastMetrics"))
        status["trainMetrics"] = _replacing(status["trainMetrics"], previous.get("trainMetrics"))
        status["finalModel"] = _replacing(status["finalModel"], previous.get("finalModel"))
        status["coordinator"] = _replacing(status["coordinator"], previous.get("coordinator"))
    return {"status": status}


def _replacing(new: Any, old: Any) -> Any:
    """``new`` plus ``None`` for each key only ``old`` has, recursively: merge-patch replacement."""
    if not isinstance(new, Mapping) or not isinstance(old, Mapping):
        return new
    out = {key: _replacing(value, old.get(key)) for key, value in new.items()}
    out.update({key: None for key in old if key not in new})
    return out


def _progress_text(percent: Any, round_number: int, rounds: int) -> str | None:
    """``"40%"``, rounded down so 100% means every round is done."""
    if isinstance(percent, int | float) and not isinstance(percent, bool) and math.isfinite(percent):
        value = percent
    elif rounds:
        value = 100.0 * round_number / rounds
    else:
        return None
    return f"{int(max(0.0, min(100.0, float(value))))}%"


def _metrics(value: Any) -> dict[str, float] | None:
    if not isinstance(value, Mapping):
        return None
    return {
        str(name): float(number)
        for name, number in sorted(value.items())
        if isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number)
    }


def _checkpoints(value: Any) -> list[ListedCheckpoint]:
    rows = [_mapping(row) for row in value or () if isinstance(row, Mapping)]
    return [
        {
            "round": _int(row.get("round")),
            "key": _text(row.get("key"), 1024),
            "sha256": _text(row.get("sha256")),
        }
        for row in rows[-MAX_CHECKPOINTS:]
    ]


def _final_model(value: Any) -> ShownFinalModel | None:
    if not isinstance(value, Mapping):
        return None
    return {
        "key": _text(value.get("key"), 1024),
        "sha256": _text(value.get("sha256")),
        "size": _int(value.get("size")),
    }


def _timestamp(value: Any) -> str | None:
    """Epoch seconds (the store's clock) as RFC 3339, which ``kubectl`` shows as a date."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return datetime.fromtimestamp(float(value), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any, limit: int = 256) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return 0


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
