"""What the tables show of the API's documents: pure functions from JSON to cells.

Kept apart from the commands so the choice of columns (which are the few
facts a person scans for) is in one place and tested without a server.
Every reader tolerates a missing field, because a job that was just
submitted has no status yet and an older server may omit newer fields.
"""

from __future__ import annotations

from collections.abc import Mapping
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
