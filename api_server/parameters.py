"""Path and query parameters: checked and converted before anything is looked up.

Names in paths are identifiers, never file paths: a namespace and a job are
DNS-1123 labels, a model name follows the registry's pattern, a version is a
positive integer.  They are checked here, before they reach the store or an
object key, so a hostile name (``..``, ``a/b``, NUL) is a 400 that names the
parameter, and object keys are always built by ``libs.objects.layout``.

The patterns are the job schema's own (``$defs``), so a name the API accepts
in a path is exactly what a job spec accepts in ``modelRef`` or
``checkpointRef``.  :data:`PATH_PARAMETERS` feeds ``/openapi.json`` too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aiohttp import web

from libs.errors import ValidationFailed
from libs.jobspec import load_schema
from libs.json_values import JsonSchema

_DEFS = load_schema()["$defs"]
DNS_LABEL: JsonSchema = {k: _DEFS["dnsLabel"][k] for k in ("type", "minLength", "maxLength", "pattern")}
MODEL_NAME: JsonSchema = {k: _DEFS["modelName"][k] for k in ("type", "minLength", "maxLength", "pattern")}
VERSION: JsonSchema = {"type": "integer", "minimum": 1, "maximum": 2**53}
# What a client certificate can carry (libs.pki.identity): the task manager's client id.
CLIENT_ID: JsonSchema = {
    "type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
}  # fmt: skip

# name -> (schema, words for messages)
PATH_PARAMETERS: dict[str, tuple[JsonSchema, str]] = {
    "ns": (DNS_LABEL, "a namespace: a DNS-1123 label (lowercase letters, digits and '-', at most 63)"),
    "name": (DNS_LABEL, "a job name: a DNS-1123 label (lowercase letters, digits and '-', at most 63)"),
    "model": (MODEL_NAME, "a model name (lowercase letters, digits, '-', '_', '.', at most 253)"),
    "version": (VERSION, "a version number (a positive integer)"),
    "clientId": (
        CLIENT_ID,
        "a client id (1-63 letters, digits, '-', '_' or '.', starting with a letter or digit)",
    ),
}


def _problem(where: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{where}: {message}", details={"errors": [{"path": where, "message": message}]})


def _matches(value: str, schema: JsonSchema) -> bool:
    return schema["minLength"] <= len(value) <= schema["maxLength"] and bool(
        re.fullmatch(schema["pattern"], value)
    )


def path_name(request: web.Request, parameter: str) -> str:
    """The path parameter ``parameter`` (``ns``, ``name``, ``model`` or ``clientId``), checked."""
    value = request.match_info[parameter]
    schema, words = PATH_PARAMETERS[parameter]
    if not _matches(value, schema):
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise _problem(f"path.{parameter}", f"must be {words}, got {shown!r}")
    return value


def path_version(request: web.Request) -> int:
    raw = request.match_info["version"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15 or int(raw) < 1:
        shown = raw if len(raw) <= 20 else raw[:17] + "..."
        raise _problem("path.version", f"must be a positive integer, got {shown!r}")
    return int(raw)


def query_int(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    stripped = raw.strip()
    if not re.fullmatch(r"-?[0-9]{1,12}", stripped):
        raise _problem(f"query.{name}", f"must be an integer between {low} and {high}, got {raw[:20]!r}")
    value = int(stripped)
    if not low <= value <= high:
        raise _problem(f"query.{name}", f"must be between {low} and {high}, got {value}")
    return value


def query_bool(request: web.Request, name: str, *, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _problem(f"query.{name}", f"must be true or false, got {raw[:20]!r}")


def query_choices(request: web.Request, name: str, allowed: Iterable[str]) -> list[str]:
    """Every value of a repeatable, comma-separable parameter (``?state=A,B&state=C``), checked."""
    options = list(allowed)
    values: list[str] = []
    for raw in request.query.getall(name, []):
        for part in raw.split(","):
            value = part.strip().upper()
            if not value:
                continue
            if value not in options:
                raise _problem(
                    f"query.{name}", f"must be one of: {', '.join(options)}, got {part.strip()[:30]!r}"
                )
            if value not in values:
                values.append(value)
    return values


def query_sha256(request: web.Request, name: str = "sha256") -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{64}", raw):
        raise _problem(f"query.{name}", "must be 64 hexadecimal characters (a SHA-256 digest)")
    return raw.lower()


def query_text(request: web.Request, name: str, *, max_length: int) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if len(raw) > max_length:
        raise _problem(f"query.{name}", f"must be at most {max_length} characters, got {len(raw)}")
    return raw
