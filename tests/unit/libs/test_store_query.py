"""Pure parts of the store: filter parsing, its SQL and MongoDB forms, and data checks."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from libs.errors import ValidationFailed
from libs.store.mongo_store import mongo_filter
from libs.store.query import Condition, SortKey, parse_order_by, parse_where
from libs.store.sqlite_queries import order_clause, where_clause
from libs.store.validation import MAX_DEPTH, json_object


class Colour(enum.StrEnum):
    RED = "red"


def test_a_filter_parses_into_one_condition_per_test() -> None:
    conditions = parse_where(
        {"namespace": "ns", "status.round": {"$gte": 2, "$lt": 5}, "x": {"$in": [1, None]}}
    )
    assert conditions == (
        Condition("namespace", "eq", "ns"),
        Condition("status.round", "gte", 2),
        Condition("status.round", "lt", 5),
        Condition("x", "in", (1, None)),
    )
    assert parse_where(None) == ()
    assert parse_order_by([("a.b", -1), ("c", 1)]) == (SortKey("a.b", True), SortKey("c", False))


def test_values_and_paths_reach_sql_only_as_parameters() -> None:
    hostile = "x' OR 1=1; DROP TABLE doc_jobs; --"
    sql, params = where_clause(parse_where({"name": hostile, "state": {"$in": [hostile]}, "n": {"$gt": 1}}))
    order_sql, order_params = order_clause(parse_order_by([("status.state", -1)]))
    assert hostile not in sql
    assert "name" not in sql and "status" not in order_sql
    assert params.count(hostile) == 2
    assert "$.name" in params and "$.status.state" in order_params
    assert order_sql.endswith("key ASC")


def test_mongodb_filters_prefix_data_and_pin_the_type_of_comparisons() -> None:
    assert mongo_filter(()) == {}
    assert mongo_filter(parse_where({"namespace": "ns"})) == {"data.namespace": "ns"}
    assert mongo_filter(parse_where({"n": {"$gt": 1}, "flag": True, "gone": {"$ne": None}})) == {
        "$and": [
            {"data.n": {"$gt": 1, "$type": "number"}},
            {"data.flag": {"$eq": True, "$type": "bool"}},
            {"data.gone": {"$ne": None, "$exists": True}},
        ]
    }


@pytest.mark.parametrize(
    "where",
    [
        {"a": {}},
        {"a": {"$gt": 1, "b": 2}},
        {"a": {"$in": list(range(1001))}},
        {"a": 2**64},
        {"a": float("nan")},
    ],
    ids=["empty operators", "mixed operators", "huge in", "big int", "nan"],
)
def test_filters_that_cannot_be_evaluated_the_same_everywhere_are_refused(where: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed):
        parse_where(where)


def test_json_object_copies_and_normalises() -> None:
    source: dict[str, Any] = {"t": (1, 2), "c": Colour.RED, "n": {"deep": [1.5]}}
    copied = json_object(source)
    assert copied == {"t": [1, 2], "c": "red", "n": {"deep": [1.5]}}
    assert type(copied["c"]) is str
    assert copied["n"] is not source["n"] and copied["n"]["deep"] is not source["n"]["deep"]


def test_json_object_refuses_documents_nested_too_deeply() -> None:
    deep: dict[str, Any] = {}
    level = deep
    for _ in range(MAX_DEPTH):
        level["x"] = {}
        level = level["x"]
    with pytest.raises(ValidationFailed) as caught:
        json_object(deep)
    assert caught.value.details["path"].startswith("data.x.x")
