"""Liveness, readiness, metrics and the OpenAPI document: the unauthenticated endpoints.

``/healthz`` says the process serves requests (nothing else: a liveness
probe that checks dependencies restarts a healthy server whenever the
store blinks).  ``/readyz`` says it can do useful work: the store answers a
ping and the scheduler's channel connects, each within
``ready_timeout_seconds``; otherwise 503 with ``Retry-After`` and which
check failed, so a load balancer stops sending traffic until it recovers.

None of these reveal anything about jobs, models or tokens.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from api_server.errors import RETRY_AFTER_SECONDS, error_body
from api_server.metrics import CONTENT_TYPE
from api_server.route_table import Access, Reply, Route
from api_server.schemas import ref
from api_server.state import METRICS, OPENAPI, SCHEDULER, SETTINGS, STORE
from libs.errors import NsflError

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    timeout = request.app[SETTINGS].ready_timeout_seconds
    checks: dict[str, str] = {}
    for name, probe in (("store", request.app[STORE].ping()), ("scheduler", request.app[SCHEDULER].ping())):
        try:
            await asyncio.wait_for(probe, timeout)
            checks[name] = "ok"
        except (NsflError, TimeoutError) as exc:
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name] = "unavailable"
    if all(value == "ok" for value in checks.values()):
        return web.json_response({"status": "ready", "checks": checks})
    failed = ", ".join(name for name, value in checks.items() if value != "ok")
    body = error_body("Unavailable", f"not ready: {failed} unavailable", {"checks": checks})
    return web.json_response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def metrics(request: web.Request) -> web.StreamResponse:
    return web.Response(body=request.app[METRICS].render().encode(), headers={"Content-Type": CONTENT_TYPE})


async def openapi_document(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[OPENAPI])


ROUTES = [
    Route("GET", "/healthz", healthz, Access.PUBLIC, "healthz", "Liveness", "health",
          Reply(200, "The process serves requests.", ref("Health"))),
    Route("GET", "/readyz", readyz, Access.PUBLIC, "readyz", "Readiness: store and scheduler reachable",
          "health", Reply(200, "Ready.", ref("Health")), errors=(503,)),
    Route("GET", "/metrics", metrics, Access.PUBLIC, "metrics", "Prometheus metrics", "health",
          Reply(200, "Prometheus text format.", {"type": "string"}, media_type="text/plain")),
    Route("GET", "/openapi.json", openapi_document, Access.PUBLIC, "openapi", "This API's OpenAPI document",
          "health", Reply(200, "OpenAPI 3.1.", {"type": "object"})),
]  # fmt: skip
