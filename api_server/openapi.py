"""The OpenAPI 3.1 document, built from the route table that the router is built from.

Nothing here is written by hand per endpoint: each :class:`Route` brings
its parameters, body, success reply and extra error statuses, and the
statuses every route of its kind can return are added by rule (401 for any
authenticated route, 404 for a namespaced one, 403 where the role matters,
400/413 where there is a body).  So the document cannot forget an endpoint
or an error it was told about, and a unit test walks ``app.router`` to
check that the two sets of (method, path) are the same.
"""

from __future__ import annotations

from importlib import metadata

from api_server.parameters import PATH_PARAMETERS
from api_server.route_table import Access, Route
from api_server.schemas import component_schemas, ref
from libs.json_values import JsonSchema

ERROR_DESCRIPTIONS = {
    400: "The request is not valid; the message and details.errors name each problem.",
    401: "No bearer token, or one that is not valid.",
    403: "The token's role may not do this (platform-wide endpoints need an admin over every namespace).",
    404: "Not found, or in a namespace this token cannot see.",
    409: "Conflicts with the current state (already exists, changed concurrently, or not allowed now).",
    413: "The body is larger than the limit.",
    503: "A dependency (scheduler, selector or store) is unavailable; retry after Retry-After seconds.",
}


def _version() -> str:
    try:
        return metadata.version("nsfl")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def error_statuses(route: Route) -> list[int]:
    statuses = set(route.errors)
    if route.access is not Access.PUBLIC:
        statuses.add(401)
    if route.path_parameters or route.query or route.body is not None:
        statuses.add(400)
    if "ns" in route.path_parameters or len(route.path_parameters) > 1:
        statuses.add(404)
    if route.access in (Access.WRITE, Access.ADMIN):
        statuses.add(403)
    if route.body is not None:
        statuses.add(413)
    return sorted(statuses)


def _parameters(route: Route) -> list[JsonSchema]:
    parameters: list[JsonSchema] = []
    for name in route.path_parameters:
        schema, words = PATH_PARAMETERS[name]
        parameters.append(
            {"name": name, "in": "path", "required": True, "schema": schema, "description": words}
        )
    for query in route.query:
        parameters.append(
            {"name": query.name, "in": "query", "required": False, "schema": dict(query.schema),
             "description": query.description}
        )  # fmt: skip
    return parameters


def _responses(route: Route) -> JsonSchema:
    reply = route.reply
    success: JsonSchema = {"description": reply.description}
    if reply.schema is not None:
        success["content"] = {reply.media_type: {"schema": dict(reply.schema)}}
    if reply.headers:
        success["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                              for name, text in reply.headers.items()}  # fmt: skip
    responses: JsonSchema = {str(reply.status): success}
    for status in error_statuses(route):
        entry: JsonSchema = {
            "description": ERROR_DESCRIPTIONS.get(status, "An error."),
            "content": {"application/json": {"schema": ref("Error")}},
        }
        if status == 503:
            entry["headers"] = {
                "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
            }
        responses[str(status)] = entry
    return responses


def operation(route: Route) -> JsonSchema:
    op: JsonSchema = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": _responses(route),
        "security": [] if route.access is Access.PUBLIC else [{"bearerAuth": []}],
    }
    if route.description:
        op["description"] = route.description
    parameters = _parameters(route)
    if parameters:
        op["parameters"] = parameters
    if route.body is not None:
        op["requestBody"] = {
            "description": route.body.description,
            "required": route.body.required,
            "content": {media: {"schema": dict(schema)} for media, schema in route.body.content.items()},
        }
    return op


def build_document(routes: list[Route]) -> JsonSchema:
    paths: dict[str, JsonSchema] = {}
    for route in routes:
        paths.setdefault(route.template, {})[route.method.lower()] = operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nsfl API",
            "version": _version(),
            "description": "Federated jobs, the model registry and clients. Every /api/v1 endpoint needs "
            "'Authorization: Bearer <token>'; a namespace the token cannot see answers 404. Errors are "
            '{"error": {"code", "message", "details"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "tags": [{"name": name} for name in ("jobs", "models", "clients", "namespaces", "health")],
    }
