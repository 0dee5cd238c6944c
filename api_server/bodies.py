"""Reading request bodies: size-capped before buffering, parsed strictly, checked by schema.

Why not ``request.json()``: aiohttp's ``client_max_size`` does stop a
large body, but only after reading up to the limit into memory, and its
JSON parser accepts duplicate keys and ``NaN``.  Here:

* a declared ``Content-Length`` over the limit is refused (413) before a
  byte is read; a chunked body is read in pieces and refused as soon as it
  passes the limit, so at most ``limit`` bytes are ever held;
* text must be UTF-8; JSON goes through the job spec's strict loader
  (duplicate keys, ``NaN`` and oversized alias expansions are errors);
* a small body (``{"fromScratch": true}``) is checked against the same JSON
  Schema that ``/openapi.json`` publishes for it, and every problem is
  named by path (``body.fromScratch: must be a boolean ...``), in the job
  spec's words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator

from libs.errors import PayloadTooLarge, ValidationFailed
from libs.jobspec import parse_spec_text
from libs.jobspec.messages import ROOT, Problem, problems_from_error
from libs.jobspec.validation import invalid
from libs.json_values import JsonObject

READ_CHUNK = 64 * 1024
JSON_TYPES = frozenset({"application/json", "application/merge-patch+json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


def too_large(limit: int, what: str = "the request body") -> PayloadTooLarge:
    return PayloadTooLarge(f"{what} is larger than the limit of {limit} bytes", details={"limit": limit})


def check_declared_length(request: web.Request, limit: int, what: str = "the request body") -> None:
    """Refuse a body whose ``Content-Length`` is over ``limit`` before any of it is read."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(limit, what)


async def read_capped(request: web.Request, limit: int) -> bytes:
    """The whole body, never more than ``limit`` bytes of it in memory."""
    check_declared_length(request, limit)
    body = bytearray()
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        if len(body) + len(chunk) > limit:
            raise too_large(limit)
        body += chunk
    return bytes(body)


def media_type(request: web.Request) -> str:
    """The body's media type, lowercase, without parameters ('' when none was sent)."""
    if "Content-Type" not in request.headers:
        return ""
    return request.content_type.lower()


async def read_text(request: web.Request, limit: int) -> str:
    raw = await read_capped(request, limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(
            f"the request body is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None


async def read_document(request: web.Request, limit: int, *, allow_yaml: bool) -> JsonObject:
    """A JSON (or, if allowed, YAML) object from the body; an empty body is ``{}``, whatever its type.

    The media type decides the syntax; without one the text is sniffed.
    """
    text = await read_text(request, limit)
    if not text.strip():
        return {}
    kind = media_type(request)
    accepted = JSON_TYPES | (YAML_TYPES if allow_yaml else frozenset())
    if kind and kind not in accepted:
        raise ValidationFailed(
            f"Content-Type {kind!r} is not accepted here; send one of: {', '.join(sorted(accepted))}",
            details={"errors": [{"path": "header.Content-Type", "message": "unsupported media type"}]},
        )
    filename = "request.json" if kind in JSON_TYPES else "request.yaml" if kind else "request body"
    if kind in JSON_TYPES and not text.lstrip().startswith("{"):
        raise ValidationFailed(f"{filename}: must hold a JSON object")
    # The job spec's loader is strict JSON/YAML; it flattens only documents that carry
    # ``kind``/``apiVersion`` (FederatedJob manifests), which small bodies' schemas refuse anyway.
    return parse_spec_text(text, filename=filename)


def body_problem(path: str, message: str) -> Problem:
    """A problem at ``body.<path>`` (``path`` ``""`` for the body itself)."""
    return Problem(f"body.{path}" if path else "body", message)


def check_body(body: Mapping[str, Any], schema: Mapping[str, Any]) -> JsonObject:
    """``body`` if it satisfies ``schema``; else ``ValidationFailed`` naming each problem under ``body``."""
    problems = {
        Problem("body" + problem.path[len(ROOT) :], problem.message)
        for error in Draft202012Validator(schema).iter_errors(body)
        for problem in problems_from_error(error)
    }
    if problems:
        raise invalid(problems)
    return dict(body)
