"""Filters and sort orders, parsed once into plain values for every backend.

A :data:`~libs.store.protocol.Where` mapping arrives from callers in a
MongoDB-like shape.  :func:`parse_where` checks it completely (field names,
operators, operand types) and turns it into a tuple of :class:`Condition`;
each backend only translates conditions (to SQL with bound parameters, or to a
MongoDB filter) and never sees raw caller input.  That keeps the two backends
from drifting apart on what they accept, and keeps SQL injection impossible
by construction: the only caller text that reaches SQL is a field name that
matched :data:`FIELD_PATTERN`, and even that is bound as a parameter.

The operator set is deliberately small (equality, ``$in``, ``$ne``, ranges,
``$exists``) because it is what the control plane needs and what both SQLite
JSON functions and the MongoDB-protocol server used in tests agree on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from libs.errors import ValidationFailed
from libs.store.validation import INT64_MAX, INT64_MIN

FIELD_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
MAX_FIELD_LENGTH = 256
MAX_IN_VALUES = 1000

Operator = Literal["eq", "ne", "in", "lt", "lte", "gt", "gte", "exists"]
RANGE_OPERATORS: tuple[Operator, ...] = ("lt", "lte", "gt", "gte")
_OPERATORS: dict[str, Operator] = {
    "$eq": "eq",
    "$ne": "ne",
    "$in": "in",
    "$lt": "lt",
    "$lte": "lte",
    "$gt": "gt",
    "$gte": "gte",
    "$exists": "exists",
}
_SUPPORTED = ", ".join(_OPERATORS)


@dataclass(frozen=True)
class Condition:
    """One test on one field of ``data``.

    ``operand`` is a JSON scalar for ``eq``/``ne``, a tuple of scalars for
    ``in``, a number or string for the ranges, and a bool for ``exists``.
    """

    field: str
    op: Operator
    operand: Any


@dataclass(frozen=True)
class SortKey:
    """One sort key: a field of ``data`` and a direction."""

    field: str
    descending: bool


def check_field(field: object) -> str:
    """Return ``field`` if it is a (possibly dotted) field name; ``ValidationFailed`` otherwise."""
    if not isinstance(field, str) or len(field) > MAX_FIELD_LENGTH or not FIELD_PATTERN.fullmatch(field):
        raise ValidationFailed(
            "field names must be identifiers joined by dots, such as 'status.state'",
            details={"field": str(field)[:80]},
        )
    return field


def parse_where(where: Mapping[str, Any] | None) -> tuple[Condition, ...]:
    """Check a filter and return its conditions (all must hold)."""
    if where is None:
        return ()
    if not isinstance(where, Mapping):
        raise ValidationFailed("where must be a mapping of field names to values or operators")
    conditions: list[Condition] = []
    for field, test in where.items():
        check_field(field)
        if isinstance(test, Mapping):
            conditions.extend(_parse_operators(field, test))
        else:
            conditions.append(Condition(field, "eq", _scalar(test, field)))
    return tuple(conditions)


def parse_required_where(where: Mapping[str, Any]) -> tuple[Condition, ...]:
    """Like :func:`parse_where`, but ``None`` is refused: bulk deletes must say what they delete."""
    if where is None:
        raise ValidationFailed("delete_many needs a filter; pass {} to delete every document")
    return parse_where(where)


def parse_order_by(order_by: Sequence[tuple[str, int]]) -> tuple[SortKey, ...]:
    """Check sort keys; directions are 1 (ascending) or -1 (descending)."""
    if isinstance(order_by, str | bytes) or not isinstance(order_by, Sequence):
        raise ValidationFailed("order_by must be a sequence of (field, direction) pairs")
    keys: list[SortKey] = []
    for item in order_by:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ValidationFailed("order_by must be a sequence of (field, direction) pairs")
        field, direction = item
        check_field(field)
        if isinstance(direction, bool) or direction not in (1, -1):
            raise ValidationFailed("sort directions must be 1 or -1", details={"field": field})
        keys.append(SortKey(field, direction == -1))
    return tuple(keys)


def _parse_operators(field: str, test: Mapping[Any, Any]) -> list[Condition]:
    if not test or not all(isinstance(name, str) and name.startswith("$") for name in test):
        raise ValidationFailed(
            "a filter value must be a scalar or a mapping of operators; "
            "to test nested fields use dotted names such as 'status.state'",
            details={"field": field},
        )
    conditions = []
    for name, operand in test.items():
        op = _OPERATORS.get(name)
        if op is None:
            raise ValidationFailed(
                f"unsupported filter operator; supported: {_SUPPORTED}",
                details={"field": field, "operator": name[:40]},
            )
        conditions.append(Condition(field, op, _operand(op, operand, field)))
    return conditions


def _operand(op: Operator, operand: Any, field: str) -> Any:
    if op in ("eq", "ne"):
        return _scalar(operand, field)
    if op == "in":
        if isinstance(operand, str | bytes | Mapping) or not isinstance(operand, Sequence):
            raise ValidationFailed("$in takes a list of values", details={"field": field})
        if len(operand) > MAX_IN_VALUES:
            raise ValidationFailed(f"$in takes at most {MAX_IN_VALUES} values", details={"field": field})
        return tuple(_scalar(value, field) for value in operand)
    if op == "exists":
        if not isinstance(operand, bool):
            raise ValidationFailed("$exists takes true or false", details={"field": field})
        return operand
    value = _scalar(operand, field)
    if value is None or isinstance(value, bool):
        raise ValidationFailed("range operators compare numbers or strings", details={"field": field})
    return value


def _scalar(value: Any, field: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        return float(value)
    raise ValidationFailed(
        "filter values must be null, booleans, 64-bit integers, finite numbers or strings; "
        "objects and arrays cannot be compared",
        details={"field": field, "type": type(value).__name__},
    )
