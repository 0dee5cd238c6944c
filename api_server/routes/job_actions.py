"""Job actions and job outputs: ``:start``, ``:stop``, ``:register-model``, metrics, checkpoints, logs.

Actions are custom methods in the ``{name}:verb`` style, so they read as
what they do and cannot collide with a sub-resource.  Start and stop are
forwarded to the scheduler, which decides whether the job's state allows
them (409 otherwise).  Registering a model copies the job's final model
into the registry as a new version, streamed object to object with its
checksum verified, with lineage (job, last round, every client whose
update was accepted); the copy means deleting the job later does not take
the registered model with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from api_server.bodies import check_body, read_document
from api_server.job_views import contributing_clients, get_job, job_checkpoints, job_rounds
from api_server.parameters import path_name, query_int
from api_server.route_table import Access, Body, QueryParam, Reply, Route
from api_server.routes.jobs import JOB_PATH, reply_job
from api_server.schemas import REGISTER_MODEL_BODY, START_BODY, ref
from api_server.state import CALLER, OBJECTS, REGISTRY, SCHEDULER, SETTINGS, STORE
from libs.errors import InvalidState, NsflError
from libs.jobspec import JobSpec
from libs.records import JobState, Lineage, as_job

MAX_ROUNDS_PAGE = 10_000
MAX_LOG_LINES = 100_000


async def start_job(request: web.Request) -> web.StreamResponse:
    namespace, name = request.match_info["ns"], path_name(request, "name")
    body = check_body(
        await read_document(request, request.app[SETTINGS].max_body_bytes, allow_yaml=False), START_BODY
    )
    await get_job(request.app[STORE], namespace, name)
    job = await request.app[SCHEDULER].start(
        request[CALLER], namespace, name, from_scratch=bool(body.get("fromScratch", False))
    )
    return reply_job(job)


async def stop_job(request: web.Request) -> web.StreamResponse:
    namespace, name = request.match_info["ns"], path_name(request, "name")
    await get_job(request.app[STORE], namespace, name)
    return reply_job(await request.app[SCHEDULER].stop(request[CALLER], namespace, name))


async def job_metrics(request: web.Request) -> web.StreamResponse:
    namespace, name = request.match_info["ns"], path_name(request, "name")
    since = query_int(request, "sinceRound", default=0, low=0, high=10**6)
    limit = query_int(request, "limit", default=1000, low=1, high=MAX_ROUNDS_PAGE)
    store = request.app[STORE]
    await get_job(store, namespace, name)
    rounds = await job_rounds(store, namespace, name, since=since, limit=limit)
    return web.json_response({"job": name, "rounds": rounds})


async def list_checkpoints(request: web.Request) -> web.StreamResponse:
    namespace, name = request.match_info["ns"], path_name(request, "name")
    store = request.app[STORE]
    await get_job(store, namespace, name)
    return web.json_response({"job": name, "checkpoints": await job_checkpoints(store, namespace, name)})


async def job_logs(request: web.Request) -> web.StreamResponse:
    namespace, name = request.match_info["ns"], path_name(request, "name")
    tail = query_int(request, "tail", default=0, low=0, high=MAX_LOG_LINES)
    await get_job(request.app[STORE], namespace, name)
    text = await request.app[SCHEDULER].logs(request[CALLER], namespace, name, tail_lines=tail)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def register_model(request: web.Request) -> web.StreamResponse:
    namespace, name = request.match_info["ns"], path_name(request, "name")
    app = request.app
    raw = await read_document(request, app[SETTINGS].max_body_bytes, allow_yaml=False)
    body = check_body(raw, REGISTER_MODEL_BODY)
    document = await get_job(app[STORE], namespace, name)
    job = as_job(document.data)
    if job.get("state") != JobState.FINISHED:
        raise InvalidState(
            f"job {name!r} is {job.get('state')}; only a FINISHED job has a final model to register",
            details={"state": job.get("state")},
        )
    # An older or hand-edited document may hold anything here: read defensively.
    raw_status = job.get("status")
    status: Mapping[str, Any] = raw_status if isinstance(raw_status, dict) else {}
    final_model = status.get("finalModel")
    final: Mapping[str, Any] = final_model if isinstance(final_model, dict) else {}
    key = final.get("key")
    # The key comes from the store, written by the coordinator; it must still lie in the job's namespace.
    if not isinstance(key, str) or not key.startswith(f"{namespace}/"):
        raise InvalidState(f"job {name!r} finished without a final model in its namespace's storage")
    try:
        await app[OBJECTS].stat(key)
    except NsflError as exc:
        if exc.code != "NotFound":
            raise
        raise InvalidState(f"the final model of job {name!r} is no longer in storage") from None
    spec = JobSpec.from_document(job["spec"])
    registry = app[REGISTRY]
    model = str(body["model"])
    description = str(body.get("description", f"final model of job {name}"))
    await registry.ensure(namespace, model, runtime=spec.runtime, description=description)
    lineage: Lineage = {
        "job": name,
        "round": status.get("round") if isinstance(status.get("round"), int) else None,
        "clients": await contributing_clients(app[STORE], namespace, name),
    }
    version = await registry.add_version(
        namespace, model, app[OBJECTS].open(key), expected_sha256=final.get("sha256") or None,
        max_size=app[SETTINGS].max_model_bytes, description=description, lineage=lineage,
    )  # fmt: skip
    response = web.json_response({"model": model, **version}, status=201)
    response.headers["Location"] = (
        f"/api/v1/namespaces/{namespace}/models/{model}/versions/{version['version']}"
    )
    return response


ROUTES = [
    Route(
        "POST", JOB_PATH + ":start", start_job, Access.WRITE, "startJob",
        "Start a FINISHED, FAILED or STOPPED job again", "jobs", Reply(200, "The job, now QUEUED.", ref("Job")),
        body=Body({"application/json": ref("StartRequest")}, "Where to start from.", required=False),
        errors=(409, 413, 503),
    ),
    Route(
        "POST", JOB_PATH + ":stop", stop_job, Access.WRITE, "stopJob", "Stop a job", "jobs",
        Reply(200, "The job, now STOPPING or STOPPED.", ref("Job")), errors=(409, 503),
    ),
    Route(
        "POST", JOB_PATH + ":register-model", register_model, Access.WRITE, "registerJobModel",
        "Register a FINISHED job's final model as a new registry version", "models",
        Reply(201, "The new version, with lineage.", ref("RegisteredVersion"), headers={"Location": "Its URL."}),
        body=Body({"application/json": ref("RegisterModelRequest")}, "The model to add the version to."),
        errors=(409, 413, 503),
    ),
    Route(
        "GET", JOB_PATH + "/metrics", job_metrics, Access.READ, "getJobMetrics",
        "Per-round records: participants, training and evaluation metrics", "jobs",
        Reply(200, "The rounds, in order.", ref("RoundList")),
        query=(
            QueryParam("sinceRound", {"type": "integer", "minimum": 0, "maximum": 10**6, "default": 0},
                       "Only rounds after this one."),
            QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": MAX_ROUNDS_PAGE, "default": 1000},
                       "At most this many rounds."),
        ),
    ),
    Route(
        "GET", JOB_PATH + "/checkpoints", list_checkpoints, Access.READ, "listJobCheckpoints",
        "The job's checkpoints", "jobs", Reply(200, "Checkpoints by round.", ref("CheckpointList")),
    ),
    Route(
        "GET", JOB_PATH + "/logs", job_logs, Access.READ, "getJobLogs", "The coordinator's log", "jobs",
        Reply(200, "The log text.", {"type": "string"}, media_type="text/plain"),
        query=(QueryParam("tail", {"type": "integer", "minimum": 0, "maximum": MAX_LOG_LINES, "default": 0},
                          "Only the last N lines (0: the platform's default)."),),
        errors=(503,),
    ),
]  # fmt: skip
