"""Checks on names, keys, data and paging shared by every store backend.

Why the backends do not simply rely on their database: SQLite would accept
almost anything (a table named ``sqlite_x`` aside) and MongoDB would reject
different things with different errors (BSON cannot hold integers beyond 64
bits, keys with NUL, ``$``-prefixed keys in updates).  Checking here, before any
I/O, gives one behaviour on both backends and means a rejected write has
stored nothing.

Object keys may not hold ``.`` (nor start with ``$``, nor be empty): filters
and sort orders use dotted paths, so a key ``"a.b"`` could never be queried,
and MongoDB's update operators would read it as a path.  Data keyed by names
that contain dots (layer names such as ``"fc1.weight"``) belongs in a list of
objects instead.

:func:`json_object` both checks and copies: what a store keeps, and what it
hands back, never aliases a caller's dict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from libs.errors import InvalidKey, ValidationFailed
from libs.json_values import JsonObject

COLLECTION_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}")
MAX_KEY_LENGTH = 512
# Deeper documents are refused by MongoDB (100 levels including the wrapper);
# state documents are shallow, so a lower bound catches accidents early.
MAX_DEPTH = 64
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def check_collection(collection: object) -> str:
    """Return ``collection`` if it is a valid collection name; ``InvalidKey`` otherwise."""
    if not isinstance(collection, str) or not COLLECTION_PATTERN.fullmatch(collection):
        raise InvalidKey(
            "collection names must match ^[a-z][a-z0-9_]{0,62}$",
            details={"collection": str(collection)[:80]},
        )
    return collection


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid document key; ``InvalidKey`` otherwise."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH or "\x00" in key:
        raise InvalidKey(
            f"document keys must be non-empty strings of at most {MAX_KEY_LENGTH} characters without NUL",
            details={"key": str(key)[:80].replace("\x00", "\\0")},
        )
    return key


def check_version(version: object, name: str = "expected_version") -> int:
    """Return ``version`` if it is a positive integer; ``ValidationFailed`` otherwise."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValidationFailed(f"{name} must be a positive integer", details={name: repr(version)[:40]})
    return version


def check_paging(limit: object, offset: object) -> tuple[int | None, int]:
    """Return ``(limit, offset)`` if both are non-negative integers (``limit`` may be ``None``)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValidationFailed("limit must be a non-negative integer or None")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValidationFailed("offset must be a non-negative integer")
    return limit, offset


def json_object(data: object, what: str = "data") -> JsonObject:
    """A deep copy of ``data`` if it is a JSON object the stores can hold; ``ValidationFailed`` otherwise."""
    if not isinstance(data, Mapping):
        raise ValidationFailed(f"{what} must be a JSON object (a mapping)", details={"path": what})
    return _copy_object(data, what, 1)


def patch_changes(changes: object) -> JsonObject:
    """A copy of ``changes``; each key names one top-level field (keys never hold dots)."""
    return json_object(changes, "changes")


def _copy_object(data: Mapping[Any, Any], path: str, depth: int) -> JsonObject:
    if depth > MAX_DEPTH:
        raise ValidationFailed(f"documents may nest at most {MAX_DEPTH} levels", details={"path": path[:200]})
    copied: JsonObject = {}
    for name, value in data.items():
        if not isinstance(name, str):
            raise ValidationFailed("JSON object keys must be strings", details={"path": path[:200]})
        if not name or name.startswith("$") or "." in name or "\x00" in name:
            raise ValidationFailed(
                "JSON object keys must be non-empty, must not start with '$' and must not contain '.' or NUL",
                details={"path": f"{path}.{name}"[:200].replace("\x00", "\\0")},
            )
        copied[name] = _copy_value(value, f"{path}.{name}", depth)
    return copied


def _copy_value(value: Any, path: str, depth: int) -> Any:
    # bool is a subclass of int: test it (and the other plain scalars) first.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a plain str even for str subclasses such as StrEnum members
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValidationFailed("integers must fit in 64 bits", details={"path": path[:200]})
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationFailed(
                "numbers must be finite (no NaN or infinity)", details={"path": path[:200]}
            )
        return float(value)
    if isinstance(value, Mapping):
        return _copy_object(value, path, depth + 1)
    if isinstance(value, list | tuple):
        if depth + 1 > MAX_DEPTH:
            raise ValidationFailed(
                f"documents may nest at most {MAX_DEPTH} levels", details={"path": path[:200]}
            )
        return [_copy_value(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
    raise ValidationFailed(
        f"{type(value).__name__} is not a JSON value",
        details={"path": path[:200], "type": type(value).__name__},
    )
