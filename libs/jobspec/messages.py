"""Turning schema violations into messages a person can act on.

jsonschema's own messages are written for schema authors (``0 is less than
the minimum of 1``, ``Additional properties are not allowed ('foo' was
unexpected)``).  A user submitting a job needs the field's path, what is
allowed and what they gave: ``spec.rounds: must be between 1 and 100000,
got 0``.  This module makes those, one :class:`Problem` per mistake, and
never echoes more than a short excerpt of a value.

Regular expressions are unreadable to most users, so every pattern of the
schema has a plain-words hint here, keyed by the ``$defs`` entry that holds
it; a unit test keeps the two in step.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import ValidationError

from libs.jobspec.schema import load_schema

ROOT = "spec"

_RELATIVE_PATH_HINT = (
    "a relative path (segments of letters, digits, '-', '_' or '.' separated by '/', "
    "with no leading '/' and no '.' or '..' segment)"
)
PATTERN_HINTS_BY_DEF: dict[str, str] = {
    "dnsLabel": "a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)",
    "labelKey": "a label key ('[prefix/]name': name of letters, digits, '-', '_', '.', starting and ending "
    "with a letter or digit; prefix a lowercase DNS subdomain)",
    "labelValue": "a label value (letters, digits, '-', '_', '.', starting and ending with a letter or digit)",
    # objectKey and relativePath share one pattern, so they share one hint.
    "objectKey": _RELATIVE_PATH_HINT,
    "relativePath": _RELATIVE_PATH_HINT,
    "modelName": "a model name (lowercase letters, digits, '-', '_', '.', starting and ending with a "
    "letter or digit)",
    "functionName": "a Python function name (letters, digits and '_', not starting with a digit)",
    "taskEntryName": "a task name (letters, digits, '-', '_', '.', not starting with '.')",
    "datasetName": "a dataset name (letters, digits, '-', '_', '.', starting with a letter, digit or '_')",
    "clientId": "a client id (letters, digits, '-', '_', '.', ':', '@', starting with a letter, digit or '_')",
    "quantity": "a quantity such as '500m', '2', '1.5', '512Mi' or '1Gi'",
}

_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "a boolean (true or false)",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


@dataclass(frozen=True, order=True)
class Problem:
    """One mistake in a spec: where (a JSON path like ``spec.privacy.dp.clipNorm``) and what."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def format_path(parts: Iterable[str | int], root: str = ROOT) -> str:
    """``["selector", "labels", "app.kubernetes.io/name"]`` -> ``spec.selector.labels["app.kubernetes.io/name"]``."""
    out = root
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


def show(value: Any, limit: int = 40) -> str:
    """A short, JSON-looking excerpt of a user's value."""
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate the user most likely meant, if any (case, '_' and '-' are ignored first)."""
    candidates = list(candidates)
    squashed = {c.lower().replace("_", "").replace("-", ""): c for c in candidates}
    key = word.lower().replace("_", "").replace("-", "")
    if key in squashed:
        return squashed[key]
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _pattern_hints() -> dict[str, str]:
    defs = load_schema()["$defs"]
    return {defs[name]["pattern"]: hint for name, hint in PATTERN_HINTS_BY_DEF.items()}


_HINTS = _pattern_hints()


def range_text(schema: Mapping[str, Any]) -> str:
    """``between 1 and 100000`` / ``greater than 0 and less than 1`` / ``at least 0``."""
    low, high = schema.get("minimum"), schema.get("maximum")
    xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if low is not None and high is not None:
        return f"between {low} and {high}"
    parts = []
    if low is not None:
        parts.append(f"at least {low}")
    if xlow is not None:
        parts.append(f"greater than {xlow}")
    if high is not None:
        parts.append(f"at most {high}")
    if xhigh is not None:
        parts.append(f"less than {xhigh}")
    return " and ".join(parts)


def _described_type(schema: Mapping[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return f"an integer or {_HINTS.get(schema.get('pattern', ''), 'a string')}"
    expected = schema.get("type")
    if isinstance(expected, str):
        return _TYPE_NAMES.get(expected, expected)
    return "a valid value"


def _is_property_name_error(error: ValidationError) -> bool:
    return "propertyNames" in list(error.absolute_schema_path)


def problems_from_error(error: ValidationError) -> Iterator[Problem]:
    """The problems one jsonschema error stands for (``additionalProperties`` may name several)."""
    parts = list(error.absolute_path)
    kind = error.validator
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    value = error.instance
    if _is_property_name_error(error) and isinstance(value, str):
        hint = _HINTS.get(str(error.validator_value), "a valid key") if kind == "pattern" else None
        if kind == "maxLength":
            hint = f"a key of at most {error.validator_value} characters"
        yield Problem(format_path([*parts, value]), f"invalid key: must be {hint or 'a valid key'}")
        return
    path = format_path(parts)
    if kind == "additionalProperties" and isinstance(value, Mapping):
        allowed = list(schema.get("properties", {}))
        for key in value:
            if key not in allowed:
                yield Problem(format_path([*parts, key]), _unknown_field(str(key), allowed))
        return
    if kind == "required" and isinstance(value, Mapping):
        properties = schema.get("properties", {})
        for key in error.validator_value:
            if key not in value:
                yield Problem(format_path([*parts, key]), _missing_field(properties.get(key, {})))
        return
    yield Problem(path, _message(error, schema, value))


def _unknown_field(key: str, allowed: list[str]) -> str:
    guess = suggest(key, allowed)
    did_you_mean = f"; did you mean {guess!r}?" if guess else ""
    return f"unknown field{did_you_mean} (allowed: {', '.join(allowed)})"


def _missing_field(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return f"required field is missing (one of: {', '.join(map(str, schema['enum']))})"
    return "required field is missing"


def _message(error: ValidationError, schema: Mapping[str, Any], value: Any) -> str:
    kind, limit = error.validator, error.validator_value
    got = f", got {show(value)}"
    if kind == "type":
        expected = " or ".join(_TYPE_NAMES.get(t, t) for t in ([limit] if isinstance(limit, str) else limit))
        return f"must be {expected}, got {json_type_name(value)} {show(value)}"
    if kind == "enum":
        options = ", ".join(map(str, limit))
        guess = suggest(value, map(str, limit)) if isinstance(value, str) else None
        did_you_mean = f" (did you mean {guess!r}?)" if guess else ""
        return f"must be one of: {options}{got}{did_you_mean}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"must be {range_text(schema)}{got}"
    if kind == "pattern":
        return f"must be {_HINTS.get(str(limit), f'a string matching {limit}')}{got}"
    if kind == "minLength":
        return "must not be empty" if limit == 1 else f"must be at least {limit} characters{got}"
    if kind == "maxLength":
        return f"must be at most {limit} characters, got {len(value)}"
    if kind == "minItems":
        return f"must have at least {limit} item{'s' if limit != 1 else ''}"
    if kind == "maxItems":
        return f"must have at most {limit} items, got {len(value)}"
    if kind == "uniqueItems":
        return f"must not repeat items, got {_first_duplicate(value)} more than once"
    if kind == "maxProperties":
        return f"must have at most {limit} entries, got {len(value)}"
    if kind == "anyOf":
        return f"must be {_described_type(schema)}, got {json_type_name(value)} {show(value)}"
    return error.message


def _first_duplicate(items: Any) -> str:
    seen: list[Any] = []
    for item in items if isinstance(items, list) else []:
        if item in seen:
            return show(item)
        seen.append(item)
    return "an item"
