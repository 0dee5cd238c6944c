"""The model registry over REST: models, their versions, uploads and downloads.

Uploads and downloads stream: the body of ``PUT .../versions`` *is* the
safetensors file, passed chunk by chunk through the header check
(``safetensors_check``) into the object store with the size limit and the
optional ``sha256`` the caller announced; a download streams the stored
object out with its length and checksum in the headers.  Neither ever holds
a model in memory.

An upload that is refused (too large, not safetensors, checksum differs,
connection dropped) stores nothing: the object store publishes only
complete, verified objects, and the version is recorded only after that.
A ``Content-Length`` over the limit is refused before a byte is read.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from api_server.bodies import check_body, check_declared_length, read_document
from api_server.job_views import decode_page_token, encode_page_token
from api_server.parameters import path_name, path_version, query_int, query_sha256, query_text
from api_server.route_table import Access, Body, QueryParam, Reply, Route
from api_server.safetensors_check import SafetensorsStream
from api_server.schemas import CREATE_MODEL_BODY, ref
from api_server.state import OBJECTS, REGISTRY, SETTINGS
from libs.errors import CorruptPayload, NsflError

log = logging.getLogger(__name__)

MODELS_PATH = "/api/v1/namespaces/{ns}/models"
MODEL_PATH = MODELS_PATH + "/{model}"
VERSIONS_PATH = MODEL_PATH + "/versions"
VERSION_PATH = VERSIONS_PATH + "/{version}"
UPLOAD_CHUNK = 1024 * 1024
SAFETENSORS_MEDIA = "application/octet-stream"
# In the query string: even percent-encoded 4-byte characters stay under aiohttp's 8 KiB request line.
MAX_QUERY_DESCRIPTION = 512


async def create_model(request: web.Request) -> web.StreamResponse:
    namespace = request.match_info["ns"]
    body = check_body(
        await read_document(request, request.app[SETTINGS].max_body_bytes, allow_yaml=False),
        CREATE_MODEL_BODY,
    )
    model = await request.app[REGISTRY].create(
        namespace, body["name"], runtime=body["runtime"], description=body.get("description", "")
    )
    response = web.json_response(model, status=201)
    response.headers["Location"] = f"{MODELS_PATH.format(ns=namespace)}/{body['name']}"
    return response


async def list_models(request: web.Request) -> web.StreamResponse:
    limit = query_int(request, "limit", default=50, low=1, high=500)
    after = decode_page_token(request.query.get("pageToken"))
    models, last = await request.app[REGISTRY].list(request.match_info["ns"], limit=limit, after=after)
    return web.json_response({"models": models, "nextPageToken": encode_page_token(last) if last else None})


async def get_model(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        await request.app[REGISTRY].get(request.match_info["ns"], path_name(request, "model"))
    )


async def list_versions(request: web.Request) -> web.StreamResponse:
    name = path_name(request, "model")
    model = await request.app[REGISTRY].get(request.match_info["ns"], name)
    return web.json_response({"model": name, "versions": model["versions"]})


async def upload_version(request: web.Request) -> web.StreamResponse:
    namespace, name = request.match_info["ns"], path_name(request, "model")
    settings = request.app[SETTINGS]
    check_declared_length(request, settings.max_model_bytes, "the model")
    expected = query_sha256(request)
    description = query_text(request, "description", max_length=MAX_QUERY_DESCRIPTION) or ""
    registry = request.app[REGISTRY]
    await registry.document(namespace, name)  # 404 before reading a byte of an upload to nowhere
    stream = SafetensorsStream(_received(request), max_size=settings.max_model_bytes)
    version = await registry.add_version(
        namespace, name, stream, expected_sha256=expected, max_size=settings.max_model_bytes,
        description=description, lineage=None,
    )  # fmt: skip
    response = web.json_response(version, status=201)
    response.headers["Location"] = f"{VERSIONS_PATH.format(ns=namespace, model=name)}/{version['version']}"
    return response


async def _received(request: web.Request) -> AsyncIterator[bytes]:
    """The request body in chunks; a dropped connection is a truncated upload, not a server error."""
    try:
        async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
            yield chunk
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise CorruptPayload(f"the upload was interrupted: {type(exc).__name__}") from None


async def download_version(request: web.Request) -> web.StreamResponse:
    namespace, name, number = request.match_info["ns"], path_name(request, "model"), path_version(request)
    number, entry = await request.app[REGISTRY].version(namespace, name, number)
    key = str(entry.get("key", ""))
    if not key.startswith(f"{namespace}/models/"):
        raise NsflError(f"version {number} of model {name!r} has an invalid storage key")
    chunks = request.app[OBJECTS].open(key)
    first = await anext(chunks, b"")  # NotFound and friends surface here, before any header is sent
    sha256 = str(entry.get("sha256", ""))
    response = web.StreamResponse(
        headers={
            "Content-Type": SAFETENSORS_MEDIA,
            "Content-Disposition": f'attachment; filename="{name}-v{number}.safetensors"',
            "ETag": f'"{sha256}"',
            "X-Nsfl-Sha256": sha256,
        }
    )
    response.content_length = int(entry.get("size", 0))
    await response.prepare(request)
    # Each chunk is sent only once the next one is in hand, so a checksum failure (raised by
    # the store after the last chunk) keeps the final chunk back and the client sees a short body.
    held = first
    try:
        async for chunk in chunks:
            await response.write(held)
            held = chunk
    except NsflError as exc:
        # The headers are gone: the only honest signal left is to end short of Content-Length.
        log.error("download of %s/%s v%d failed midway: %s", namespace, name, number, exc.message)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write(held)
    await response.write_eof()
    return response


async def delete_model(request: web.Request) -> web.StreamResponse:
    await request.app[REGISTRY].delete(request.match_info["ns"], path_name(request, "model"))
    return web.Response(status=204)


async def delete_version(request: web.Request) -> web.StreamResponse:
    namespace, name, number = request.match_info["ns"], path_name(request, "model"), path_version(request)
    await request.app[REGISTRY].delete_version(namespace, name, number)
    return web.Response(status=204)


_PAGE_QUERY = (
    QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "Page size."),
    QueryParam("pageToken", {"type": "string", "maxLength": 1024}, "nextPageToken of the previous page."),
)
_UPLOAD_QUERY = (
    QueryParam(
        "sha256",
        {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
        "The file's SHA-256; the upload is refused if it differs.",
    ),
    QueryParam(
        "description", {"type": "string", "maxLength": MAX_QUERY_DESCRIPTION}, "What this version is."
    ),
)

ROUTES = [
    Route(
        "POST", MODELS_PATH, create_model, Access.WRITE, "createModel", "Create a registry model", "models",
        Reply(201, "The model, with no versions yet.", ref("Model"), headers={"Location": "Its URL."}),
        body=Body({"application/json": ref("CreateModelRequest")}, "The model's name, runtime and description."),
        errors=(409, 413),
    ),
    Route(
        "GET", MODELS_PATH, list_models, Access.READ, "listModels", "List models by name, a page at a time",
        "models", Reply(200, "One page of models.", ref("ModelList")), query=_PAGE_QUERY,
    ),
    Route(
        "GET", MODEL_PATH, get_model, Access.READ, "getModel", "Get a model and its versions", "models",
        Reply(200, "The model.", ref("Model")),
    ),
    Route(
        "DELETE", MODEL_PATH, delete_model, Access.WRITE, "deleteModel", "Delete a model and every version",
        "models", Reply(204, "Deleted."), errors=(409,),
    ),
    Route(
        "GET", VERSIONS_PATH, list_versions, Access.READ, "listModelVersions", "List a model's versions",
        "models", Reply(200, "The versions, oldest first.", ref("VersionList")),
    ),
    Route(
        "PUT", VERSIONS_PATH, upload_version, Access.WRITE, "uploadModelVersion",
        "Upload a safetensors file as the model's next version", "models",
        Reply(201, "The new version.", ref("ModelVersion"), headers={"Location": "Its URL."}),
        query=_UPLOAD_QUERY,
        body=Body({SAFETENSORS_MEDIA: {"type": "string", "format": "binary"}},
                  "The safetensors file itself, streamed; at most max_model_bytes."),
        errors=(409, 413), streams_body=True,
    ),
    Route(
        "GET", VERSION_PATH + "/download", download_version, Access.READ, "downloadModelVersion",
        "Download a version's safetensors file", "models",
        Reply(200, "The file, streamed.", {"type": "string", "format": "binary"}, media_type=SAFETENSORS_MEDIA,
              headers={"ETag": "The quoted SHA-256.", "X-Nsfl-Sha256": "The file's SHA-256."}),
    ),
    Route(
        "DELETE", VERSION_PATH, delete_version, Access.WRITE, "deleteModelVersion", "Delete one version",
        "models", Reply(204, "Deleted."), errors=(409,),
    ),
]  # fmt: skip
