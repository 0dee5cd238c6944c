"""SQLite store: several store instances, and several processes, on one file.

The scheduler and the API server each open their own connection to the same
database file; these tests play both roles and check that writes are seen
across connections and that compare-and-set still has one winner.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.errors import VersionConflict
from libs.store import Document, SqliteDocumentStore

REPO_ROOT = Path(__file__).resolve().parents[3]
INCREMENTS = 25

INCREMENTER = """
import asyncio, sys
from libs.errors import VersionConflict
from libs.store import SqliteDocumentStore

async def main(path: str, times: int) -> None:
    store = await SqliteDocumentStore.open(path)
    try:
        for _ in range(times):
            while True:
                current = await store.get("rounds", "r")
                data = {"accepted": current.data["accepted"] + 1}
                try:
                    await store.replace("rounds", "r", data, expected_version=current.version)
                    break
                except VersionConflict:
                    pass
    finally:
        await store.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


@pytest.fixture
async def two_stores(tmp_path: Path) -> AsyncIterator[tuple[SqliteDocumentStore, SqliteDocumentStore]]:
    path = str(tmp_path / "shared.db")
    scheduler = await SqliteDocumentStore.open(path)
    api_server = await SqliteDocumentStore.open(path)
    try:
        yield scheduler, api_server
    finally:
        await scheduler.close()
        await api_server.close()


async def increment(store: SqliteDocumentStore, times: int) -> None:
    for _ in range(times):
        while True:
            current = await store.get("rounds", "r")
            try:
                await store.replace(
                    "rounds",
                    "r",
                    {"accepted": current.data["accepted"] + 1},
                    expected_version=current.version,
                )
                break
            except VersionConflict:
                await asyncio.sleep(0)


async def test_two_stores_on_one_file_see_each_others_writes(
    two_stores: tuple[SqliteDocumentStore, SqliteDocumentStore],
) -> None:
    scheduler, api_server = two_stores
    await api_server.insert("jobs", "ns/job", {"namespace": "ns", "state": "PENDING"})
    assert await scheduler.get("jobs", "ns/job") == Document(
        "ns/job", 1, {"namespace": "ns", "state": "PENDING"}
    )
    await scheduler.patch("jobs", "ns/job", {"state": "RUNNING"})
    assert (await api_server.find("jobs", {"state": "RUNNING"}))[0].version == 2


async def test_compare_and_set_between_two_stores_has_one_winner(
    two_stores: tuple[SqliteDocumentStore, SqliteDocumentStore],
) -> None:
    scheduler, api_server = two_stores
    await scheduler.insert("jobs", "j", {"state": "RUNNING"})
    seen_by_api = await api_server.get("jobs", "j")
    await scheduler.replace("jobs", "j", {"state": "DONE"}, expected_version=1)
    with pytest.raises(VersionConflict) as caught:
        await api_server.replace("jobs", "j", {"state": "CANCELLED"}, expected_version=seen_by_api.version)
    assert caught.value.details["current_version"] == 2
    assert await api_server.get("jobs", "j") == Document("j", 2, {"state": "DONE"})


async def test_interleaved_increments_from_two_stores_lose_nothing(
    two_stores: tuple[SqliteDocumentStore, SqliteDocumentStore],
) -> None:
    scheduler, api_server = two_stores
    await scheduler.insert("rounds", "r", {"accepted": 0})
    await asyncio.gather(increment(scheduler, INCREMENTS), increment(api_server, INCREMENTS))
    assert await api_server.get("rounds", "r") == Document(
        "r", 2 * INCREMENTS + 1, {"accepted": 2 * INCREMENTS}
    )


async def test_increments_from_another_process_and_this_one_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    store = await SqliteDocumentStore.open(path)
    try:
        await store.insert("rounds", "r", {"accepted": 0})
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        other = await asyncio.create_subprocess_exec(
            sys.executable, "-c", INCREMENTER, path, str(INCREMENTS), env=env, cwd=REPO_ROOT
        )
        await increment(store, INCREMENTS)
        assert await asyncio.wait_for(other.wait(), timeout=30) == 0
        assert (await store.get("rounds", "r")).data == {"accepted": 2 * INCREMENTS}
    finally:
        await store.close()


async def test_file_databases_use_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    store = await SqliteDocumentStore.open(str(path))
    await store.insert("jobs", "k", {})
    await store.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    connection.close()
    assert tables == {"doc_jobs"}


async def test_memory_databases_are_private_to_one_store() -> None:
    first = await SqliteDocumentStore.open(":memory:")
    second = await SqliteDocumentStore.open(":memory:")
    try:
        await first.insert("jobs", "k", {})
        assert await second.try_get("jobs", "k") is None
    finally:
        await first.close()
        await second.close()
