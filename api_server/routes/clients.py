"""Namespaces and clients: what a caller may see beyond one namespace.

``GET /namespaces`` answers "where can I work": the token's namespaces, or,
for a token with ``*``, every namespace that holds a job or a model (there
is no namespace object to create: a namespace exists by being used).

``GET /clients`` lists the task managers registered with the selector and
their liveness.  Clients are shared by every namespace (a hospital's
client can train jobs of several teams), so any valid token may list them.
"""

from __future__ import annotations

from aiohttp import web

from api_server.parameters import query_bool
from api_server.route_table import Access, QueryParam, Reply, Route
from api_server.schemas import ref
from api_server.state import CALLER, SELECTOR, STORE

NAMESPACE_SCAN_LIMIT = 10_000


async def list_namespaces(request: web.Request) -> web.StreamResponse:
    caller = request[CALLER]
    if not caller.all_namespaces:
        return web.json_response({"namespaces": sorted(caller.namespaces), "allNamespaces": False})
    store = request.app[STORE]
    seen: set[str] = set()
    for collection in ("jobs", "models"):
        for document in await store.find(collection, limit=NAMESPACE_SCAN_LIMIT):
            namespace = document.data.get("namespace")
            if isinstance(namespace, str):
                seen.add(namespace)
    return web.json_response({"namespaces": sorted(seen), "allNamespaces": True})


async def list_clients(request: web.Request) -> web.StreamResponse:
    include_lost = query_bool(request, "includeLost", default=True)
    clients = await request.app[SELECTOR].list_clients(include_lost=include_lost)
    return web.json_response({"clients": clients})


ROUTES = [
    Route(
        "GET", "/api/v1/namespaces", list_namespaces, Access.CALLER, "listNamespaces",
        "The namespaces this token may use", "namespaces", Reply(200, "The namespaces.", ref("NamespaceList")),
    ),
    Route(
        "GET", "/api/v1/clients", list_clients, Access.CALLER, "listClients",
        "Registered clients with their liveness", "clients", Reply(200, "The clients.", ref("ClientList")),
        query=(QueryParam("includeLost", {"type": "boolean", "default": True},
                          "Also list clients whose heartbeats stopped."),),
        errors=(503,),
    ),
]  # fmt: skip
