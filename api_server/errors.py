"""The REST error boundary: every failure leaves as ``{"error": {code, message, details}}``.

One middleware translates, so handlers simply raise what they mean:

* an :class:`~libs.errors.NsflError` gets its catalogue status and its own
  message (written for users); ``Unavailable`` adds ``Retry-After``, and
  ``Unauthenticated`` adds ``WWW-Authenticate: Bearer``;
* aiohttp's own HTTP errors (no such route, method not allowed, body over
  ``client_max_size``) get the same JSON shape, with the catalogue code
  for their status where there is one (``NotFound``, ``PayloadTooLarge``)
  and the status's name otherwise (``MethodNotAllowed``);
* anything else is a bug: the traceback goes to the log with the request
  id, the caller gets 500 with the catalogue's public message and that id,
  never the exception's text.

An ``NsflError`` whose code is ``Internal`` is treated like a bug too: its
message may come from deep inside a library.  So is an ``Unavailable``
that the upstream adapters did not word themselves (a store's message can
name its host or file): the caller gets the catalogue's public message.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from api_server.state import REQUEST_ID, SETTINGS
from libs.errors import CATALOGUE, NsflError

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
_CODE_BY_STATUS = {
    400: "ValidationFailed",
    401: "Unauthenticated",
    403: "PermissionDenied",
    404: "NotFound",
    409: "AlreadyExists",
    413: "PayloadTooLarge",
    500: "Internal",
    503: "Unavailable",
    504: "DeadlineExceeded",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def nsfl_error_response(error: NsflError, request_id: str) -> web.Response:
    status = error.entry.http_status
    body = error.to_json()
    if error.code == "Internal":
        body = error_body("Internal", CATALOGUE["Internal"].public_message, {"requestId": request_id})
    elif error.code == "Unavailable" and "dependency" not in error.details:
        # Not from ``upstream``: a store's own message may name its host or file; keep that in the log.
        body = error_body("Unavailable", CATALOGUE["Unavailable"].public_message, {"requestId": request_id})
    response = web.json_response(body, status=status)
    if error.code == "Unavailable":
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if error.code == "Unauthenticated":
        response.headers["WWW-Authenticate"] = 'Bearer realm="nsfl"'
    return response


def _status_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")
    except ValueError:
        return f"Http{status}"


def http_error_response(exc: web.HTTPException, request: web.Request) -> web.Response:
    status = exc.status
    code = _CODE_BY_STATUS.get(status) or _status_name(status)
    details: dict[str, Any] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        message = f"method {request.method} is not allowed on {request.path} (allowed: {', '.join(allowed)})"
        details["allowed"] = allowed
    elif status == 404:
        message = f"no such endpoint: {request.method} {request.path} (see /openapi.json)"
    elif status == 413:
        message = "the request body is larger than the limit"
        if SETTINGS in request.app:
            message += f" of {request.app[SETTINGS].max_body_bytes} bytes"
    else:
        message = exc.reason
    response = web.json_response(error_body(code, message, details), status=status)
    for name in ("Allow", "Retry-After"):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
    if not request_id.isascii() or not request_id.isprintable():
        request_id = secrets.token_hex(8)
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except NsflError as exc:
        if exc.code in ("Internal", "Unavailable"):
            log.error("request %s %s failed [%s]: %s", request.method, request.path, request_id, exc.message)
        response = nsfl_error_response(exc, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = http_error_response(exc, request)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("request %s %s failed [%s]", request.method, request.path, request_id)
        response = nsfl_error_response(NsflError(CATALOGUE["Internal"].public_message), request_id)
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response
