"""One route table for the router and for ``/openapi.json``.

Each :class:`Route` says what aiohttp needs (method, path, handler) and what
the OpenAPI document needs (summary, parameters, body, responses), plus who
may call it (:class:`Access`).  :func:`install` adds the routes to an app
with the access check wrapped around each handler; ``openapi`` builds the
document from the same list, and a test walks ``app.router`` to prove the
two agree in both directions.

Why access is checked in a wrapper rather than a middleware: the wrapper
knows its route's :class:`Access` without a lookup, and a route added
without one does not exist.  The order is fixed and deliberate (DESIGN §9):
401 for a missing or unknown token, 400 for a malformed namespace, 404 for a
namespace the caller cannot see (its existence is not revealed), and only
then 403 for a viewer trying to change something, or for anyone but an
admin over every namespace calling a platform-wide endpoint (:data:`Access.ADMIN`).
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import HttpVersion11, web

from api_server.parameters import path_name
from api_server.state import CALLER, SETTINGS, TOKENS
from libs.errors import NsflError, PayloadTooLarge, ValidationFailed

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access(enum.Enum):
    PUBLIC = "public"  # no token (health, metrics, the OpenAPI document)
    CALLER = "caller"  # any valid token
    READ = "read"  # a token that sees the path's namespace
    WRITE = "write"  # ... with a role that may change things
    ADMIN = "admin"  # an admin over every namespace: platform-wide endpoints (enrolment, revocation)


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: Mapping[str, Any]
    description: str


@dataclass(frozen=True)
class Reply:
    """A success response: status, media type and schema (None: no body)."""

    status: int
    description: str
    schema: Mapping[str, Any] | None = None
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description


@dataclass(frozen=True)
class Body:
    """A request body: schema per media type."""

    content: Mapping[str, Mapping[str, Any]]
    description: str
    required: bool = True


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # aiohttp form: ``{name:regex}`` allowed
    handler: Handler
    access: Access
    operation_id: str
    summary: str
    tag: str
    reply: Reply
    query: tuple[QueryParam, ...] = ()
    body: Body | None = None
    errors: tuple[int, ...] = ()  # statuses beyond those the access and body imply
    description: str = ""
    streams_body: bool = False  # the body is a model, limited by max_model_bytes rather than max_body_bytes

    @property
    def template(self) -> str:
        """The path as OpenAPI writes it: ``{name}`` without aiohttp's regex."""
        return re.sub(r"\{(\w+):[^{}]*\}", r"{\1}", self.path)

    @property
    def path_parameters(self) -> list[str]:
        return re.findall(r"\{(\w+)(?::[^{}]*)?\}", self.path)


def guarded(route: Route) -> Handler:
    """``route.handler`` behind the access check of its :class:`Access`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if route.access is not Access.PUBLIC:
            caller = request.app[TOKENS].authenticate(request.headers.get("Authorization"))
            request[CALLER] = caller
            if "ns" in request.match_info:
                caller.require_namespace(path_name(request, "ns"))
            if route.access is Access.ADMIN:
                caller.require_platform_admin()
            if route.access is Access.WRITE:
                caller.require_write()
            if route.access is Access.WRITE or (route.access is Access.ADMIN and request.method != "GET"):
                response = await route.handler(request)
                # An audit line per change: who (the token's name, never the token), what, and the outcome.
                log.info("%s %s -> %d by %s", request.method, request.path, response.status, caller.name)
                return response
        return await route.handler(request)

    handle.__name__ = route.operation_id
    handle.__doc__ = route.summary
    return handle


def expect_continue(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """Answer ``Expect: 100-continue`` only for a request that will be read.

    aiohttp's default says "continue" to everyone, so a client would start
    sending a body that is then refused.  Here a missing or unknown token,
    or a declared ``Content-Length`` over the limit, gets its final answer
    instead, before the client sends a byte of the body.  (This runs
    before the middlewares, so it answers in the error shape itself.)
    """

    async def expect(request: web.Request) -> web.StreamResponse | None:
        settings = request.app[SETTINGS]
        limit = settings.max_model_bytes if route.streams_body else settings.max_body_bytes
        refusal: NsflError | None = None
        if route.access is not Access.PUBLIC:
            try:
                request.app[TOKENS].authenticate(request.headers.get("Authorization"))
            except NsflError as exc:
                refusal = exc
        if refusal is None and request.content_length is not None and request.content_length > limit:
            refusal = PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
        if refusal is not None:
            return web.json_response(refusal.to_json(), status=refusal.entry.http_status)
        if request.version != HttpVersion11 or request.headers.get("Expect", "").lower() != "100-continue":
            error = ValidationFailed("the only supported Expect is 100-continue")
            return web.json_response(error.to_json(), status=417)
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response does not count as the body
        return None

    return expect


def install(app: web.Application, routes: list[Route]) -> None:
    seen: set[tuple[str, str]] = set()
    for route in routes:
        if (route.method, route.template) in seen:
            raise ValueError(f"route {route.method} {route.template} is declared twice")
        seen.add((route.method, route.template))
        app.router.add_route(
            route.method,
            route.path,
            guarded(route),
            name=route.operation_id,
            expect_handler=expect_continue(route),
        )
