"""SQL text for the SQLite store: table names, filters and sort orders.

Every value, and every JSON path, reaches SQLite as a bound parameter; the
only text built from caller input is a table name, and that is a collection
name that already matched ``^[a-z][a-z0-9_]{0,62}$``.

Why the filters look verbose: ``json_extract`` turns JSON ``true`` into the
integer 1, and SQLite happily orders any text above any number, so a naive
``json_extract(data, '$.n') > 1`` would match the string ``"0"`` and
``{"flag": true}`` would equal ``1``.  MongoDB compares only values of the same
kind, so each test here first checks ``json_type`` and only then the value.
Every condition is written to yield 0 or 1, never NULL, so that ``NOT`` (used
for ``$ne``) treats a missing field as "not equal", as MongoDB does.

The same idea orders mixed values like MongoDB's sort order: a rank per JSON
type (missing/null, numbers, strings, objects, arrays, booleans) comes before
the value itself.

Paths are bound, so SQLite cannot use expression indexes on them; that is a
conscious trade: the collections hold control-plane state (jobs, rounds,
clients) and a table scan over them is cheap.
"""

from __future__ import annotations

from typing import Any

from libs.store.query import Condition, SortKey

TABLE_PREFIX = "doc_"  # SQLite reserves names starting with "sqlite_", a valid collection name.

_NUMBER = "IN ('integer', 'real')"
_TEXT = "= 'text'"
_COMPARE = {"eq": "=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_TYPE_RANK = (
    "CASE json_type(data, ?) WHEN 'integer' THEN 1 WHEN 'real' THEN 1 WHEN 'text' THEN 2 "
    "WHEN 'object' THEN 3 WHEN 'array' THEN 4 WHEN 'false' THEN 5 WHEN 'true' THEN 5 ELSE 0 END"
)


def table_name(collection: str) -> str:
    """The quoted table name of a (validated) collection."""
    return f'"{TABLE_PREFIX}{collection}"'


def create_table(collection: str) -> str:
    """DDL for one collection's table."""
    return (
        f"CREATE TABLE IF NOT EXISTS {table_name(collection)} "
        "(key TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL)"
    )


def json_path(field: str) -> str:
    """The SQLite JSON path of a (validated, possibly dotted) field name."""
    return "$." + field


def where_clause(conditions: tuple[Condition, ...]) -> tuple[str, list[Any]]:
    """``WHERE ...`` (or an empty string) and its parameters."""
    if not conditions:
        return "", []
    parts: list[str] = []
    params: list[Any] = []
    for condition in conditions:
        sql, condition_params = _condition(condition)
        parts.append(sql)
        params.extend(condition_params)
    return "WHERE " + " AND ".join(parts), params


def order_clause(keys: tuple[SortKey, ...]) -> tuple[str, list[Any]]:
    """``ORDER BY ...`` ending with the key as tie-break, and its parameters."""
    parts: list[str] = []
    params: list[Any] = []
    for key in keys:
        direction = "DESC" if key.descending else "ASC"
        path = json_path(key.field)
        parts.append(f"{_TYPE_RANK} {direction}, json_extract(data, ?) {direction}")
        params.extend([path, path])
    parts.append("key ASC")
    return "ORDER BY " + ", ".join(parts), params


def _condition(condition: Condition) -> tuple[str, list[Any]]:
    path = json_path(condition.field)
    if condition.op == "eq":
        return _equals(path, condition.operand)
    if condition.op == "ne":
        sql, params = _equals(path, condition.operand)
        return f"NOT {sql}", params
    if condition.op == "in":
        if not condition.operand:
            return "0", []
        parts: list[str] = []
        params = []
        for value in condition.operand:
            sql, value_params = _equals(path, value)
            parts.append(sql)
            params.extend(value_params)
        return "(" + " OR ".join(parts) + ")", params
    if condition.op == "exists":
        return (
            "(json_type(data, ?) IS NOT NULL)" if condition.operand else "(json_type(data, ?) IS NULL)"
        ), [path]
    return _typed_compare(path, _COMPARE[condition.op], condition.operand)


def _equals(path: str, value: Any) -> tuple[str, list[Any]]:
    if value is None:
        # json_extract is NULL both for a JSON null and for a missing field, as MongoDB's {f: null}.
        return "(json_extract(data, ?) IS NULL)", [path]
    if isinstance(value, bool):
        return "(json_type(data, ?) IS ?)", [path, "true" if value else "false"]
    return _typed_compare(path, "=", value)


def _typed_compare(path: str, operator: str, value: Any) -> tuple[str, list[Any]]:
    kind = _TEXT if isinstance(value, str) else _NUMBER
    return (
        f"COALESCE(json_type(data, ?) {kind} AND json_extract(data, ?) {operator} ?, 0)",
        [path, path, value],
    )
