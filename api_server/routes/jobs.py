"""Jobs: create, list, get, update (PATCH) and delete.

Creating and updating validate the whole spec here (schema, cross-field
rules, then that every referenced model or checkpoint exists) before
anything is sent to the scheduler: a bad spec is a 400 naming each field,
and nothing is stored.  The scheduler then stores and runs the job and
answers with it.  Reads come from the store (see ``job_views``).

A job is addressed as ``/namespaces/{ns}/jobs/{name}``; names are DNS-1123
labels, so they never contain ``:``, which the custom methods
(``{name}:start``) rely on.
"""

from __future__ import annotations

from aiohttp import web

from api_server.bodies import read_document
from api_server.job_views import (
    STATES,
    UPDATABLE_STATES,
    JobView,
    decode_page_token,
    get_job,
    job_view,
    list_jobs,
)
from api_server.parameters import path_name, query_choices, query_int
from api_server.route_table import Access, Body, QueryParam, Reply, Route
from api_server.schemas import ref
from api_server.spec_references import check_references
from api_server.state import CALLER, OBJECTS, REGISTRY, SCHEDULER, SETTINGS, STORE
from libs.errors import InvalidState, ValidationFailed
from libs.jobspec import JobSpec
from libs.jobspec.patching import patched_spec
from libs.json_values import JsonObject

JOBS_PATH = "/api/v1/namespaces/{ns}/jobs"
JOB_PATH = "/api/v1/namespaces/{ns}/jobs/{name:[^/:]+}"
SPEC_MEDIA_TYPES = ("application/json", "application/yaml")


def reply_job(job: JobView, *, status: int = 200) -> web.Response:
    version = job.get("version")
    return web.json_response(job_view(job, version if isinstance(version, int) else None), status=status)


async def validated(request: web.Request, raw: JsonObject, namespace: str) -> JobSpec:
    """The spec with defaults written in, after its references were found; else a 400."""
    full = JobSpec.parse(raw, namespace=namespace)
    app = request.app
    await check_references(full, namespace, store=app[STORE], objects=app[OBJECTS], registry=app[REGISTRY])
    return full


async def create_job(request: web.Request) -> web.StreamResponse:
    namespace = request.match_info["ns"]
    raw = await read_document(request, request.app[SETTINGS].max_body_bytes, allow_yaml=True)
    spec = await validated(request, raw, namespace)
    job = await request.app[SCHEDULER].submit(request[CALLER], namespace, spec)
    response = reply_job(job, status=201)
    response.headers["Location"] = f"/api/v1/namespaces/{namespace}/jobs/{spec.name}"
    return response


async def list_namespace_jobs(request: web.Request) -> web.StreamResponse:
    states = query_choices(request, "state", STATES)
    limit = query_int(request, "limit", default=50, low=1, high=500)
    after = decode_page_token(request.query.get("pageToken"))
    jobs, next_token = await list_jobs(
        request.app[STORE], request.match_info["ns"], states=states, limit=limit, after=after
    )
    return web.json_response({"jobs": jobs, "nextPageToken": next_token})


async def get_one_job(request: web.Request) -> web.StreamResponse:
    document = await get_job(request.app[STORE], request.match_info["ns"], path_name(request, "name"))
    return web.json_response(job_view(document.data, document.version))


async def update_job(request: web.Request) -> web.StreamResponse:
    namespace, name = request.match_info["ns"], path_name(request, "name")
    patch = await read_document(request, request.app[SETTINGS].max_body_bytes, allow_yaml=True)
    if not patch:
        raise ValidationFailed("body: send the spec fields to change (a JSON merge patch); it was empty")
    document = await get_job(request.app[STORE], namespace, name)
    state = str(document.data.get("state", ""))
    if state not in UPDATABLE_STATES:
        raise InvalidState(
            f"cannot update job {name!r} in state {state} (allowed in: {', '.join(sorted(UPDATABLE_STATES))}); "
            "stop it first",
            details={"state": state},
        )
    current = JobSpec.from_document(document.data["spec"])
    spec = await validated(request, patched_spec(current, patch), namespace)
    job = await request.app[SCHEDULER].update(
        request[CALLER], namespace, name, spec, expected_version=document.version
    )
    return reply_job(job)


async def delete_job(request: web.Request) -> web.StreamResponse:
    namespace, name = request.match_info["ns"], path_name(request, "name")
    await get_job(request.app[STORE], namespace, name)
    return reply_job(await request.app[SCHEDULER].delete(request[CALLER], namespace, name))


_SPEC_BODY = Body(
    content={media: ref("JobSpec") for media in SPEC_MEDIA_TYPES},
    description="A job spec, or a FederatedJob manifest, as JSON or YAML. Its namespace must be the path's "
    "or absent. Unknown fields are errors; defaults are written into the stored spec.",
)
_PATCH_BODY = Body(
    content={"application/merge-patch+json": ref("JobPatch"), "application/json": ref("JobPatch")},
    description="Spec changes as a JSON merge patch.",
)

ROUTES = [
    Route(
        "POST", JOBS_PATH, create_job, Access.WRITE, "createJob", "Submit a job", "jobs",
        Reply(201, "The accepted job, as the scheduler stored it.", ref("Job"), headers={"Location": "The job's URL."}),
        body=_SPEC_BODY, errors=(409, 413, 503),
    ),
    Route(
        "GET", JOBS_PATH, list_namespace_jobs, Access.READ, "listJobs", "List jobs by name, a page at a time",
        "jobs", Reply(200, "One page of jobs.", ref("JobList")),
        query=(
            QueryParam("state", {"type": "string"}, "Only jobs in these states (comma-separated or repeated): "
                       + ", ".join(STATES) + "."),
            QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "Page size."),
            QueryParam("pageToken", {"type": "string", "maxLength": 1024}, "nextPageToken of the previous page."),
        ),
    ),
    Route(
        "GET", JOB_PATH, get_one_job, Access.READ, "getJob", "Get a job with its status", "jobs",
        Reply(200, "The job.", ref("Job")),
    ),
    Route(
        "PATCH", JOB_PATH, update_job, Access.WRITE, "updateJob", "Change a job's spec", "jobs",
        Reply(200, "The updated job.", ref("Job")), body=_PATCH_BODY, errors=(409, 413, 503),
        description="Allowed while no coordinator runs the old spec: "
        + ", ".join(sorted(UPDATABLE_STATES)) + "; otherwise 409.",
    ),
    Route(
        "DELETE", JOB_PATH, delete_job, Access.WRITE, "deleteJob", "Delete a job and its files", "jobs",
        Reply(200, "The job, now DELETING.", ref("Job")), errors=(409, 503),
        description="Allowed when the job is not running (stop it first); otherwise 409.",
    ),
]  # fmt: skip
