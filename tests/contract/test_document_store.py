"""One contract for every DocumentStore backend.

Each test runs against SQLite (a file in the test's tmp dir) and against
MongoDB (motor talking to the nx-27017 protocol server, one database per
test), so the two backends cannot drift apart.  A few MongoDB-only tests at
the end cover what only a network store can do wrong: an unreachable or
stopped server must give ``Unavailable`` quickly and without credentials.

Where nx-27017 differs from MongoDB itself the test is marked as an expected,
strict failure on the mongodb backend, so the gap stays visible and the mark
has to go once the server is fixed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from libs.errors import AlreadyExists, NotFound, VersionConflict
from libs.store import Document, DocumentStore

# -- single documents ---------------------------------------------------------


async def test_insert_then_get_returns_the_data_at_version_1(store: DocumentStore) -> None:
    data = {
        "namespace": "ns",
        "state": "PENDING",
        "spec": {"rounds": 3, "lr": 0.5, "tags": ["a", None, True]},
    }
    inserted = await store.insert("jobs", "ns/job-1", data)
    assert inserted == Document("ns/job-1", 1, data)
    assert await store.get("jobs", "ns/job-1") == inserted
    assert await store.try_get("jobs", "ns/job-1") == inserted
    assert isinstance((await store.get("jobs", "ns/job-1")).data["spec"]["lr"], float)


async def test_returned_data_is_a_fresh_copy(store: DocumentStore) -> None:
    data: dict[str, Any] = {"spec": {"rounds": 3}}
    inserted = await store.insert("jobs", "k", data)
    data["spec"]["rounds"] = 99
    inserted.data["spec"]["rounds"] = 98
    read = await store.get("jobs", "k")
    read.data["spec"]["rounds"] = 97
    assert (await store.get("jobs", "k")).data == {"spec": {"rounds": 3}}


async def test_missing_documents_raise_not_found_or_give_none(store: DocumentStore) -> None:
    with pytest.raises(NotFound) as caught:
        await store.get("jobs", "nope")
    assert caught.value.details == {"collection": "jobs", "key": "nope"}
    assert await store.try_get("jobs", "nope") is None


async def test_duplicate_insert_raises_already_exists_and_keeps_the_original(store: DocumentStore) -> None:
    await store.insert("jobs", "k", {"v": "original"})
    with pytest.raises(AlreadyExists):
        await store.insert("jobs", "k", {"v": "second"})
    assert await store.get("jobs", "k") == Document("k", 1, {"v": "original"})


async def test_collections_are_separate(store: DocumentStore) -> None:
    await store.insert("jobs", "k", {"in": "jobs"})
    await store.insert("rounds", "k", {"in": "rounds"})
    assert (await store.get("jobs", "k")).data == {"in": "jobs"}
    assert await store.count("rounds") == 1
    assert await store.find("clients") == []


async def test_long_slashed_and_unicode_keys_round_trip(store: DocumentStore) -> None:
    for key in ["ns/job-1/round-2", "ü/ß/日本", "x" * 512, " spaced key "]:
        await store.insert("jobs", key, {"name": "ünï 日本"})
        assert (await store.get("jobs", key)).data == {"name": "ünï 日本"}


# -- compare-and-set ------------------------------------------------------------


async def test_replace_with_the_current_version_writes_the_next_version(store: DocumentStore) -> None:
    await store.insert("jobs", "k", {"state": "PENDING", "old": True})
    replaced = await store.replace("jobs", "k", {"state": "RUNNING"}, expected_version=1)
    assert replaced == Document("k", 2, {"state": "RUNNING"})
    assert await store.get("jobs", "k") == replaced


async def test_replace_with_a_stale_version_raises_conflict_and_changes_nothing(store: DocumentStore) -> None:
    await store.insert("jobs", "k", {"state": "PENDING"})
    await store.replace("jobs", "k", {"state": "RUNNING"}, expected_version=1)
    with pytest.raises(VersionConflict) as caught:
        await store.replace("jobs", "k", {"state": "FAILED"}, expected_version=1)
    assert caught.value.details["current_version"] == 2
    assert caught.value.details["expected_version"] == 1
    assert await store.get("jobs", "k") == Document("k", 2, {"state": "RUNNING"})


async def test_replace_of_a_missing_document_raises_not_found(store: DocumentStore) -> None:
    with pytest.raises(NotFound):
        await store.replace("jobs", "nope", {}, expected_version=1)
    assert await store.try_get("jobs", "nope") is None


async def test_concurrent_writers_with_one_version_have_exactly_one_winner(store: DocumentStore) -> None:
    await store.insert("jobs", "k", {"owner": None})

    async def claim(owner: int) -> int | None:
        try:
            await store.replace("jobs", "k", {"owner": owner}, expected_version=1)
            return owner
        except VersionConflict:
            return None

    results = await asyncio.gather(*(claim(owner) for owner in range(20)))
    winners = [owner for owner in results if owner is not None]
    assert len(winners) == 1
    assert await store.get("jobs", "k") == Document("k", 2, {"owner": winners[0]})


async def test_concurrent_read_modify_write_loops_lose_no_update(store: DocumentStore) -> None:
    await store.insert("rounds", "r", {"accepted": 0})

    async def increment() -> int:
        conflicts = 0
        while True:
            current = await store.get("rounds", "r")
            data = {"accepted": current.data["accepted"] + 1}
            try:
                await store.replace("rounds", "r", data, expected_version=current.version)
                return conflicts
            except VersionConflict:
                conflicts += 1

    await asyncio.gather(*(increment() for _ in range(12)))
    assert await store.get("rounds", "r") == Document("r", 13, {"accepted": 12})


# -- patch, upsert, delete ------------------------------------------------------


async def test_patch_sets_top_level_fields_and_keeps_the_others(store: DocumentStore) -> None:
    await store.insert("jobs", "k", {"state": "PENDING", "status": {"round": 1, "loss": 0.5}, "keep": [1]})
    patched = await store.patch("jobs", "k", {"state": "RUNNING", "status": {"round": 2}, "error": None})
    expected = {"state": "RUNNING", "status": {"round": 2}, "keep": [1], "error": None}
    assert patched == Document("k", 2, expected)
    assert await store.get("jobs", "k") == patched


async def test_patch_with_a_version_is_compare_and_set(store: DocumentStore) -> None:
    await store.insert("jobs", "k", {"state": "PENDING"})
    assert (await store.patch("jobs", "k", {"state": "RUNNING"}, expected_version=1)).version == 2
    with pytest.raises(VersionConflict) as caught:
        await store.patch("jobs", "k", {"state": "FAILED"}, expected_version=1)
    assert caught.value.details["current_version"] == 2
    assert await store.get("jobs", "k") == Document("k", 2, {"state": "RUNNING"})


async def test_patch_of_a_missing_document_raises_not_found(store: DocumentStore) -> None:
    with pytest.raises(NotFound):
        await store.patch("jobs", "nope", {"state": "RUNNING"})
    with pytest.raises(NotFound):
        await store.patch("jobs", "nope", {"state": "RUNNING"}, expected_version=1)
    assert await store.try_get("jobs", "nope") is None


async def test_concurrent_patches_without_a_version_are_all_applied(store: DocumentStore) -> None:
    await store.insert("clients", "c", {"name": "c"})
    await asyncio.gather(*(store.patch("clients", "c", {f"field_{n}": n}) for n in range(10)))
    stored = await store.get("clients", "c")
    assert stored.version == 11
    assert stored.data == {"name": "c", **{f"field_{n}": n for n in range(10)}}


async def test_upsert_creates_then_overwrites_whatever_is_stored(store: DocumentStore) -> None:
    assert await store.upsert("models", "m", {"a": 1, "b": 2}) == Document("m", 1, {"a": 1, "b": 2})
    assert await store.upsert("models", "m", {"c": 3}) == Document("m", 2, {"c": 3})
    assert await store.get("models", "m") == Document("m", 2, {"c": 3})


async def test_concurrent_upserts_each_bump_the_version(store: DocumentStore) -> None:
    await asyncio.gather(*(store.upsert("models", "m", {"writer": n}) for n in range(8)))
    stored = await store.get("models", "m")
    assert stored.version == 8
    assert stored.data["writer"] in range(8)


async def test_delete_without_a_version_removes_the_document(store: DocumentStore) -> None:
    await store.insert("jobs", "k", {})
    assert await store.delete("jobs", "k") is True
    assert await store.try_get("jobs", "k") is None
    assert await store.delete("jobs", "k") is False


async def test_delete_with_a_version_is_compare_and_set(store: DocumentStore) -> None:
    await store.insert("jobs", "k", {})
    await store.patch("jobs", "k", {"state": "DONE"})
    with pytest.raises(VersionConflict) as caught:
        await store.delete("jobs", "k", expected_version=1)
    assert caught.value.details["current_version"] == 2
    assert (await store.get("jobs", "k")).version == 2
    assert await store.delete("jobs", "k", expected_version=2) is True
    assert await store.delete("jobs", "k", expected_version=2) is False


# -- queries --------------------------------------------------------------------
