"""Namespaces and clients: what a caller may see beyond one namespace.

``GET /namespaces`` answers "where can I work": the token's namespaces, or,
for a token with ``*``, every namespace known: named in the token file, or
holding a job or a model (there is no namespace object to create: a
namespace exists by being granted or used).  An admin over every namespace
also gets, per namespace, how many jobs and models it holds and which
tokens reach it (their names and roles, never the tokens), which is what an
operator needs to see who can do what where.

``GET /clients`` lists the task managers registered with the selector and
their liveness.  Clients are shared by every namespace (a hospital's
client can train jobs of several teams), so any valid token may list them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from aiohttp import web

from api_server.auth import ALL_NAMESPACES
from api_server.parameters import query_bool
from api_server.route_table import Access, QueryParam, Reply, Route
from api_server.schemas import ref
from api_server.state import CALLER, SELECTOR, STORE, TOKENS
from libs.records import JOBS, MODELS

NAMESPACE_SCAN_LIMIT = 10_000


async def list_namespaces(request: web.Request) -> web.StreamResponse:
    caller = request[CALLER]
    if not caller.all_namespaces:
        return web.json_response({"namespaces": sorted(caller.namespaces), "allNamespaces": False})
    store = request.app[STORE]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for collection in (JOBS, MODELS):
        for document in await store.find(collection, limit=NAMESPACE_SCAN_LIMIT):
            namespace = document.data.get("namespace")
            if isinstance(namespace, str):
                counts[namespace][collection] += 1
    grants: dict[str, list[dict[str, str]]] = defaultdict(list)
    for token in request.app[TOKENS].callers:
        for namespace in sorted(token.namespaces):
            grants[namespace].append({"name": token.name, "role": token.role.value})
    known = sorted((set(counts) | set(grants)) - {ALL_NAMESPACES})
    reply: dict[str, Any] = {"namespaces": known, "allNamespaces": True}
    if caller.is_platform_admin:
        everywhere = grants.get(ALL_NAMESPACES, [])
        reply["details"] = [
            {"namespace": namespace, "jobs": counts[namespace]["jobs"], "models": counts[namespace]["models"],
             "tokens": [*grants.get(namespace, []), *everywhere]}
            for namespace in known
        ]  # fmt: skip
    return web.json_response(reply)


async def list_clients(request: web.Request) -> web.StreamResponse:
    include_lost = query_bool(request, "includeLost", default=True)
    clients = await request.app[SELECTOR].list_clients(include_lost=include_lost)
    return web.json_response({"clients": clients})


ROUTES = [
    Route(
        "GET", "/api/v1/namespaces", list_namespaces, Access.CALLER, "listNamespaces",
        "The namespaces this token may use", "namespaces", Reply(200, "The namespaces.", ref("NamespaceList")),
        description="A token over every namespace sees every namespace known (token file, jobs, models); "
        "an admin over every namespace also gets details: jobs, models and the tokens that reach each.",
    ),
    Route(
        "GET", "/api/v1/clients", list_clients, Access.CALLER, "listClients",
        "Registered clients with their liveness", "clients", Reply(200, "The clients.", ref("ClientList")),
        query=(QueryParam("includeLost", {"type": "boolean", "default": True},
                          "Also list clients whose heartbeats stopped."),),
        errors=(503,),
    ),
]  # fmt: skip
