"""The DocumentStore contract, part two: queries, paging, bad input and outages.

Runs against SQLite and MongoDB (nx-27017) like part one
(``test_document_store.py``); the fixtures live in ``document_store_support``.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from libs.errors import InvalidKey, Unavailable, ValidationFailed
from libs.store import Document, DocumentStore, open_document_store
from tests.contract.document_store_support import keys, nx_gap
from tests.fixtures.mongo import start_nx_27017

JOBS = [
    ("a/j1", {"namespace": "a", "state": "RUNNING", "round": 3, "status": {"state": "ok", "loss": 0.5}}),
    ("a/j2", {"namespace": "a", "state": "PENDING", "round": 1, "status": {"state": "ok", "loss": 0.25}}),
    ("a/j3", {"namespace": "a", "state": "FAILED", "round": 10, "status": {"state": "error", "loss": 2}}),
    ("b/j1", {"namespace": "b", "state": "RUNNING", "round": 2, "status": {"state": "ok", "loss": 1.5}}),
    ("b/j2", {"namespace": "b", "state": "DONE", "round": 3, "status": {"state": "ok"}}),
]


@pytest.fixture
async def jobs(store: DocumentStore) -> DocumentStore:
    for key, data in reversed(JOBS):
        await store.insert("jobs", key, data)
    return store


async def test_find_by_namespace(jobs: DocumentStore) -> None:
    assert await keys(jobs, "jobs", {"namespace": "a"}) == ["a/j1", "a/j2", "a/j3"]
    assert await keys(jobs, "jobs", {"namespace": "c"}) == []
    assert await keys(jobs, "jobs") == ["a/j1", "a/j2", "a/j3", "b/j1", "b/j2"]


async def test_find_by_state_with_in(jobs: DocumentStore) -> None:
    assert await keys(jobs, "jobs", {"state": {"$in": ["RUNNING", "PENDING"]}}) == ["a/j1", "a/j2", "b/j1"]
    assert await keys(jobs, "jobs", {"namespace": "b", "state": {"$in": ["RUNNING", "X"]}}) == ["b/j1"]
    assert await keys(jobs, "jobs", {"state": {"$in": []}}) == []


async def test_find_by_nested_field(jobs: DocumentStore) -> None:
    assert await keys(jobs, "jobs", {"status.state": "error"}) == ["a/j3"]
    assert await keys(jobs, "jobs", {"status.loss": {"$gte": 0.5, "$lt": 2}}) == ["a/j1", "b/j1"]


async def test_find_with_ne_exists_and_ranges(jobs: DocumentStore) -> None:
    assert await keys(jobs, "jobs", {"state": {"$ne": "RUNNING"}}) == ["a/j2", "a/j3", "b/j2"]
    assert await keys(jobs, "jobs", {"status.loss": {"$exists": False}}) == ["b/j2"]
    assert await keys(jobs, "jobs", {"status.loss": {"$exists": True}, "round": {"$gt": 2}}) == [
        "a/j1",
        "a/j3",
    ]
    assert await keys(jobs, "jobs", {"round": {"$lte": 2}}) == ["a/j2", "b/j1"]
    assert await keys(jobs, "jobs", {"state": {"$gte": "FAILED", "$lt": "RUNNING"}}) == ["a/j2", "a/j3"]
    assert await keys(jobs, "jobs", {"round": 3.0}) == ["a/j1", "b/j2"]


async def test_count_and_delete_many_use_the_same_filters(jobs: DocumentStore) -> None:
    assert await jobs.count("jobs") == 5
    assert await jobs.count("jobs", {"namespace": "a", "round": {"$gt": 1}}) == 2
    assert await jobs.count("nothing_here") == 0
    assert await jobs.delete_many("jobs", {"namespace": "a", "round": {"$gt": 1}}) == 2
    assert await keys(jobs, "jobs") == ["a/j2", "b/j1", "b/j2"]
    assert await jobs.delete_many("jobs", {"namespace": "zzz"}) == 0
    with pytest.raises(ValidationFailed):
        await jobs.delete_many("jobs", None)  # type: ignore[arg-type]
    assert await jobs.delete_many("jobs", {}) == 3
    assert await jobs.count("jobs") == 0


async def test_sort_ascending_and_descending_with_ties_broken_by_key(jobs: DocumentStore) -> None:
    assert await keys(jobs, "jobs", order_by=[("round", 1)]) == ["a/j2", "b/j1", "a/j1", "b/j2", "a/j3"]
    assert await keys(jobs, "jobs", order_by=[("round", -1)]) == ["a/j3", "a/j1", "b/j2", "b/j1", "a/j2"]
    by_state_then_round = await keys(jobs, "jobs", order_by=[("status.state", -1), ("round", -1)])
    assert by_state_then_round == ["a/j1", "b/j2", "b/j1", "a/j2", "a/j3"]
    assert await keys(jobs, "jobs", {"namespace": "a"}, order_by=[("status.loss", 1)]) == [
        "a/j2",
        "a/j1",
        "a/j3",
    ]


async def test_missing_values_sort_first_ascending_and_last_descending(jobs: DocumentStore) -> None:
    assert (await keys(jobs, "jobs", order_by=[("status.loss", 1)]))[0] == "b/j2"
    assert (await keys(jobs, "jobs", order_by=[("status.loss", -1)]))[-1] == "b/j2"


async def test_pages_of_limit_and_offset_are_stable_and_cover_everything(store: DocumentStore) -> None:
    for n in range(23):
        await store.insert("job_events", f"e{n:02d}", {"job": "j", "priority": n % 3})
    order = [("priority", -1)]
    pages = [
        await keys(store, "job_events", order_by=order, limit=5, offset=start) for start in range(0, 25, 5)
    ]
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    flat = [key for page in pages for key in page]
    assert flat == await keys(store, "job_events", order_by=order)
    assert sorted(flat) == [f"e{n:02d}" for n in range(23)]
    assert await keys(store, "job_events", order_by=order, limit=0) == []
    assert await keys(store, "job_events", offset=30) == []
    assert await keys(store, "job_events", offset=21) == ["e21", "e22"]


async def test_range_comparisons_match_only_values_of_the_same_kind(store: DocumentStore) -> None:
    for key, value in [("n1", 1), ("n5", 5.5), ("s0", "0"), ("s9", "9"), ("t", True), ("o", {"x": 2})]:
        await store.insert("models", key, {"v": value})
    assert await keys(store, "models", {"v": {"$gt": 0}}) == ["n1", "n5"]
    assert await keys(store, "models", {"v": {"$lt": 100}}) == ["n1", "n5"]
    assert await keys(store, "models", {"v": {"$gte": "0"}}) == ["s0", "s9"]
    assert await keys(store, "models", {"v": {"$lt": "5"}}) == ["s0"]


async def test_equality_tells_booleans_from_numbers_and_strings(store: DocumentStore) -> None:
    for key, value in [("one", 1), ("true", True), ("text", "1"), ("zero", 0.0), ("false", False)]:
        await store.insert("clients", key, {"v": value})
    assert await keys(store, "clients", {"v": 1}) == ["one"]
    assert await keys(store, "clients", {"v": True}) == ["true"]
    assert await keys(store, "clients", {"v": "1"}) == ["text"]
    assert await keys(store, "clients", {"v": 0}) == ["zero"]
    assert await keys(store, "clients", {"v": False}) == ["false"]


async def test_null_matches_null_and_missing_and_ne_null_matches_the_rest(store: DocumentStore) -> None:
    documents: list[tuple[str, dict[str, Any]]] = [
        ("null", {"v": None}),
        ("missing", {}),
        ("set", {"v": "x"}),
    ]
    for key, data in documents:
        await store.insert("clients", key, data)
    assert await keys(store, "clients", {"v": None}) == ["missing", "null"]
    assert await keys(store, "clients", {"v": {"$ne": None}}) == ["set"]
    assert await keys(store, "clients", {"v": {"$ne": "x"}}) == ["missing", "null"]
    assert await keys(store, "clients", {"v": {"$in": [None, "x"]}}) == ["missing", "null", "set"]


async def test_exists_counts_null_values_as_present(
    store: DocumentStore, request: pytest.FixtureRequest
) -> None:
    nx_gap(request, "$exists: true skips fields whose value is null")
    for key, data in [("null", {"v": None}), ("missing", {})]:
        await store.insert("clients", key, data)
    assert await keys(store, "clients", {"v": {"$exists": True}}) == ["null"]


async def test_ne_and_in_tell_booleans_from_numbers(
    store: DocumentStore, request: pytest.FixtureRequest
) -> None:
    nx_gap(request, "$ne and $in treat true as 1 and false as 0")
    for key, value in [("one", 1), ("true", True)]:
        await store.insert("clients", key, {"v": value})
    assert await keys(store, "clients", {"v": {"$ne": 1}}) == ["true"]
    assert await keys(store, "clients", {"v": {"$in": [True]}}) == ["true"]


# -- invalid input -------------------------------------------------------------

BAD_COLLECTIONS = ["", "Jobs", "1jobs", "jobs-x", "jobs.x", "j" * 64, "sp ace", "jöbs"]
BAD_KEYS: list[Any] = ["", "k" * 513, "a\x00b", 5, None]


@pytest.mark.parametrize("collection", BAD_COLLECTIONS)
async def test_invalid_collection_names_raise_invalid_key(store: DocumentStore, collection: str) -> None:
    with pytest.raises(InvalidKey):
        await store.insert(collection, "k", {})
    with pytest.raises(InvalidKey):
        await store.get(collection, "k")
    with pytest.raises(InvalidKey):
        await store.find(collection)
    with pytest.raises(InvalidKey):
        await store.delete_many(collection, {})


async def test_invalid_keys_raise_invalid_key_and_store_nothing(store: DocumentStore) -> None:
    for key in BAD_KEYS:
        with pytest.raises(InvalidKey):
            await store.insert("jobs", key, {})
        with pytest.raises(InvalidKey):
            await store.upsert("jobs", key, {})
        with pytest.raises(InvalidKey):
            await store.try_get("jobs", key)
        with pytest.raises(InvalidKey):
            await store.delete("jobs", key)
    assert await store.count("jobs") == 0


NOT_JSON: list[Any] = [
    {"v": {1, 2}},
    {"v": b"bytes"},
    {"v": math.nan},
    {"v": math.inf},
    {"v": object()},
    {"v": 2**70},
    {1: "int key"},
    {"$where": "x"},
    {"a.b": 1},
    {"nested": {"": 1}},
    {"nested": [{"ok": 1}, {"bad": float("-inf")}]},
    ["not", "an", "object"],
]


async def test_non_json_data_raises_validation_failed_and_stores_nothing(store: DocumentStore) -> None:
    await store.insert("jobs", "existing", {"v": 1})
    for data in NOT_JSON:
        with pytest.raises(ValidationFailed):
            await store.insert("jobs", "new", data)
        with pytest.raises(ValidationFailed):
            await store.upsert("jobs", "new", data)
        with pytest.raises(ValidationFailed):
            await store.replace("jobs", "existing", data, expected_version=1)
        with pytest.raises(ValidationFailed):
            await store.patch("jobs", "existing", data)
    assert await store.try_get("jobs", "new") is None
    assert await store.get("jobs", "existing") == Document("existing", 1, {"v": 1})


BAD_QUERIES: list[dict[str, Any]] = [
    {"where": {"a..b": 1}},
    {"where": {"1a": 1}},
    {"where": {"a-b": 1}},
    {"where": {"a; DROP TABLE doc_jobs": 1}},
    {"where": {"a": {"$regex": "x"}}},
    {"where": {"a": {"b": 1}}},
    {"where": {"a": [1]}},
    {"where": {"a": {"$in": "abc"}}},
    {"where": {"a": {"$gt": None}}},
    {"where": {"a": {"$exists": 1}}},
    {"order_by": [("a", 2)]},
    {"order_by": [("a b", 1)]},
    {"limit": -1},
    {"offset": -1},
]


@pytest.mark.parametrize("query", BAD_QUERIES, ids=repr)
async def test_invalid_filters_and_paging_raise_validation_failed(
    store: DocumentStore, query: dict[str, Any]
) -> None:
    with pytest.raises(ValidationFailed):
        await store.find("jobs", **query)


async def test_filter_values_are_data_not_code(store: DocumentStore) -> None:
    await store.insert("jobs", "k", {"name": "x"})
    assert await keys(store, "jobs", {"name": "x' OR '1'='1"}) == []
    assert await keys(store, "jobs", {"name": {"$in": ["') OR 1=1 --"]}}) == []
    assert await store.count("jobs") == 1


# -- lifecycle -------------------------------------------------------------------


async def test_ping_answers_and_a_closed_store_raises_unavailable(store_url: str) -> None:
    opened = await open_document_store(store_url)
    await opened.ping()
    await opened.insert("jobs", "k", {})
    await opened.close()
    await opened.close()
    with pytest.raises(Unavailable):
        await opened.get("jobs", "k")
    with pytest.raises(Unavailable):
        await opened.ping()


# -- MongoDB only: outages -------------------------------------------------------


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_unreachable_mongodb_raises_unavailable_quickly_without_credentials() -> None:
    url = f"mongodb://nsfl:s3cr3t-pw@127.0.0.1:{_unused_port()}/nsfl?serverSelectionTimeoutMS=300"
    store = await open_document_store(url)
    try:
        operations: list[Callable[[], Awaitable[object]]] = [
            store.ping,
            lambda: store.insert("jobs", "k", {}),
            lambda: store.find("jobs"),
        ]
        for operation in operations:
            started = time.monotonic()
            with pytest.raises(Unavailable) as caught:
                await operation()
            assert time.monotonic() - started < 3
            assert "s3cr3t" not in str(caught.value)
            assert "s3cr3t" not in repr(caught.value.to_json())
            assert caught.value.__cause__ is None
    finally:
        await store.close()


async def test_stopped_mongodb_raises_unavailable_within_a_deadline(tmp_path: Path) -> None:
    server = start_nx_27017(tmp_path)
    try:
        store = await open_document_store(f"{server.url}/nsfl?serverSelectionTimeoutMS=500")
        await store.insert("jobs", "k", {"state": "RUNNING"})
        server.stop()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await store.get("jobs", "k")
        assert time.monotonic() - started < 5
        await store.close()
    finally:
        server.stop()
