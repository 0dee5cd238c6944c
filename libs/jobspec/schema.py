"""Loading the job JSON Schema and reading facts out of it.

The schema lives next to this module as ``job.schema.json`` (draft 2020-12)
and is the single source of the job's fields, bounds and defaults: REST,
the CLI and the CRD all derive from it.  It uses a few ``$defs`` (DNS
labels, object-store keys, quantities) to avoid repeating patterns;
:func:`inline_refs` expands them for consumers that cannot follow ``$ref``
(the Kubernetes CRD).  The definitions never refer to themselves, so
inlining always terminates; a cycle is reported instead of looping.

:func:`load_schema` returns a fresh copy on every call so no caller can
alter what another one validates against; the compiled validator is built
once from a private copy.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_RESOURCE = "job.schema.json"


@functools.cache
def _schema() -> dict[str, Any]:
    text = resources.files("libs.jobspec").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_schema() -> dict[str, Any]:
    """The job JSON Schema (a copy the caller may change)."""
    return copy.deepcopy(_schema())


@functools.cache
def validator() -> Draft202012Validator:
    """A compiled validator for the job schema, shared by every call."""
    return Draft202012Validator(copy.deepcopy(_schema()))


@functools.cache
def inlined_schema() -> dict[str, Any]:
    """The job schema with every ``$ref`` replaced by its definition (no ``$defs`` left)."""
    schema = load_schema()
    defs = schema.pop("$defs", {})
    result: dict[str, Any] = inline_refs(schema, defs)
    return result


def inline_refs(node: Any, defs: Mapping[str, Any], _seen: tuple[str, ...] = ()) -> Any:
    """Replace ``{"$ref": "#/$defs/x", ...siblings}`` by ``x`` merged with the siblings.

    Siblings win over the definition (a property's own ``description`` or
    ``default`` is more specific than the shared one).  Only local
    ``#/$defs/`` references are supported; anything else is a ``ValueError``.
    """
    if isinstance(node, list):
        return [inline_refs(item, defs, _seen) for item in node]
    if not isinstance(node, Mapping):
        return copy.deepcopy(node)
    if "$ref" in node:
        target = node["$ref"]
        prefix = "#/$defs/"
        if not isinstance(target, str) or not target.startswith(prefix) or target[len(prefix) :] not in defs:
            raise ValueError(f"unsupported or unknown $ref {target!r}")
        name = target[len(prefix) :]
        if name in _seen:
            raise ValueError(f"$ref cycle through {' -> '.join((*_seen, name))}")
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return inline_refs(merged, defs, (*_seen, name))
    return {key: inline_refs(value, defs, _seen) for key, value in node.items()}


def top_level_fields() -> list[str]:
    """The spec's field names, in schema order."""
    return list(_schema()["properties"])
