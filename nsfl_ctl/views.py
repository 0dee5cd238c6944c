"""What the tables show of the API's documents: pure functions from JSON to cells.

Kept apart from the commands so the choice of columns (which are the few
facts a person scans for) is in one place and tested without a server.
Every reader tolerates a missing field, because a job that was just
submitted has no status yet and an older server may omit newer fields.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from nsfl_ctl.output import Column, age, metric, short_digest, size, text

TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "STOPPED"})


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def status_of(job: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping(job.get("status"))


def rounds_text(job: Mapping[str, Any]) -> str:
    status = status_of(job)
    total = status.get("rounds") or mapping(job.get("spec")).get("rounds")
    return f"{status.get('round', 0) or 0}/{total}" if total else ""


def last_metric(job: Mapping[str, Any], name: str) -> Any:
    return mapping(status_of(job).get("lastMetrics")).get(name)


def short_reason(value: Any, limit: int = 60) -> str:
    reason = text(value)
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


JOB_COLUMNS = (
    Column("NAME", lambda j: j.get("name"), no_wrap=True),
    Column("STATE", lambda j: j.get("state"), no_wrap=True),
    Column("ROUND", rounds_text, no_wrap=True),
    Column("ACCURACY", lambda j: metric(last_metric(j, "accuracy"))),
    Column("LOSS", lambda j: metric(last_metric(j, "loss"))),
    Column("AGE", lambda j: age(j.get("createdAt")), no_wrap=True),
    Column("REASON", lambda j: short_reason(j.get("reason"))),
)


def job_fields(job: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``get job NAME``: the facts of one job, in the order a person asks for them."""
    status = status_of(job)
    spec = mapping(job.get("spec"))
    final = mapping(status.get("finalModel"))
    progress = status.get("progress")
    return [
        ("Name", f"{job.get('namespace')}/{job.get('name')}"),
        ("State", job.get("state")),
        ("Reason", job.get("reason")),
        ("Round", rounds_text(job)),
        ("Progress", f"{progress:g}%" if isinstance(progress, (int, float)) else ""),
        ("Accuracy", metric(last_metric(job, "accuracy"))),
        ("Loss", metric(last_metric(job, "loss"))),
        ("Participants", status.get("participants") or []),
        ("Checkpoints", status.get("checkpointCount") or len(status.get("checkpoints") or [])),
        ("Final model", f"{final.get('key')} ({size(final.get('size'))})" if final.get("key") else ""),
        ("Runtime", spec.get("runtime")),
        ("Task entry", spec.get("taskEntry")),
        ("Aggregation", mapping(spec.get("aggregation")).get("name")),
        ("Age", age(job.get("createdAt"))),
    ]


MODEL_COLUMNS = (
    Column("NAME", lambda m: m.get("name"), no_wrap=True),
    Column("RUNTIME", lambda m: m.get("runtime"), no_wrap=True),
    Column("LATEST", lambda m: m.get("latest")),
    Column("VERSIONS", lambda m: len(m.get("versions") or [])),
    Column("AGE", lambda m: age(m.get("createdAt")), no_wrap=True),
    Column("DESCRIPTION", lambda m: short_reason(m.get("description"))),
)

VERSION_COLUMNS = (
    Column("VERSION", lambda v: v.get("version"), no_wrap=True),
    Column("SIZE", lambda v: size(v.get("size")), no_wrap=True),
    Column("SHA256", lambda v: short_digest(v.get("sha256")), no_wrap=True),
    Column("AGE", lambda v: age(v.get("createdAt")), no_wrap=True),
    Column("FROM JOB", lambda v: mapping(v.get("lineage")).get("job")),
    Column("DESCRIPTION", lambda v: short_reason(v.get("description"))),
)


def datasets_text(client: Mapping[str, Any]) -> str:
    parts = []
    for dataset in client.get("datasets") or []:
        entry = mapping(dataset)
        samples = entry.get("samples")
        parts.append(f"{entry.get('name')}:{samples}" if samples else str(entry.get("name")))
    return ", ".join(parts)


CLIENT_COLUMNS = (
    Column("CLIENT", lambda c: c.get("clientId"), no_wrap=True),
    Column("LIVENESS", lambda c: c.get("liveness"), no_wrap=True),
    Column("RUNTIMES", lambda c: c.get("runtimes") or []),
    Column("DATASETS", datasets_text),
    Column("TASKS", lambda c: c.get("runningTasks")),
    Column("RESERVED BY", lambda c: c.get("reservedBy")),
    Column("LAST HEARTBEAT", lambda c: age(c.get("lastHeartbeat")), no_wrap=True),
)
# Registry hygiene: where a client registered from, and when its entry goes if it stays away.
HYGIENE_COLUMNS = (
    Column("SOURCE", lambda c: c.get("source"), no_wrap=True),
    Column("EXPIRES IN", lambda c: until(c.get("expiresAt")), no_wrap=True),
)


def client_columns(clients: Sequence[Mapping[str, Any]]) -> tuple[Column, ...]:
    """The client table's columns, with the hygiene ones when the API sends them (older ones do not)."""
    hygiene = any("source" in c or "expiresAt" in c for c in clients)
    return CLIENT_COLUMNS + HYGIENE_COLUMNS if hygiene else CLIENT_COLUMNS


def until(timestamp: Any, now: float | None = None) -> str:
    """``3d``, ``5h``... until a Unix timestamp; ``now`` when it passed; empty when unknown."""
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool) or not timestamp:
        return ""
    left = timestamp - (time.time() if now is None else now)
    return age(-left, 0.0) if left > 0 else "now"


def evaluation(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping(record.get("evaluation"))


ROUND_COLUMNS = (
    Column("ROUND", lambda r: r.get("round"), no_wrap=True),
    Column("ACCEPTED", lambda r: len(r.get("accepted") or [])),
    Column("SAMPLES", lambda r: r.get("samples")),
    Column("TRAIN LOSS", lambda r: metric(mapping(r.get("trainMetrics")).get("loss"))),
    Column("ACCURACY", lambda r: metric(evaluation(r).get("accuracy"))),
    Column("LOSS", lambda r: metric(evaluation(r).get("loss"))),
)
