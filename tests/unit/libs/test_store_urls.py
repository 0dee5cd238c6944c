"""Opening a document store from a URL: what is accepted, what is refused, and what errors say."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.errors import ValidationFailed
from libs.store import SqliteDocumentStore, open_document_store, sqlite_location
from libs.store.mongo_store import MongoDocumentStore


def test_sqlite_urls_name_an_absolute_path(tmp_path: Path) -> None:
    assert sqlite_location(f"sqlite://{tmp_path}/state.db") == (f"{tmp_path}/state.db", 5000)
    assert sqlite_location(f"sqlite:///{tmp_path}/state.db") == (f"{tmp_path}/state.db", 5000)
    assert sqlite_location(f"sqlite://{tmp_path}/with%20space.db?busy_timeout_ms=250") == (
        f"{tmp_path}/with space.db",
        250,
    )


def test_both_memory_spellings_give_a_memory_database() -> None:
    assert sqlite_location("sqlite:///:memory:") == (":memory:", 5000)
    assert sqlite_location("sqlite://:memory:") == (":memory:", 5000)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://relative/state.db",
        "sqlite:///",
        "sqlite:///tmp/",
        "sqlite:///no/such/directory/state.db",
        "sqlite:///tmp/x.db?mode=ro",
        "sqlite:///tmp/x.db?busy_timeout_ms=-1",
        "sqlite:///tmp/x.db?busy_timeout_ms=999999999",
        "sqlite:///tmp/x.db#frag",
    ],
)
def test_sqlite_urls_that_are_not_valid_are_refused(url: str) -> None:
    with pytest.raises(ValidationFailed):
        sqlite_location(url)


async def test_open_gives_the_backend_the_scheme_names(tmp_path: Path) -> None:
    sqlite = await open_document_store(f"sqlite://{tmp_path}/state.db")
    mongo = await open_document_store("mongodb://127.0.0.1:1/nsfl")
    try:
        assert isinstance(sqlite, SqliteDocumentStore)
        assert isinstance(mongo, MongoDocumentStore)
    finally:
        await sqlite.close()
        await mongo.close()


@pytest.mark.parametrize(
    "url", ["postgres://u:hunter2@db/x", "file:///tmp/x.db", "hunter2", "redis://hunter2@x"]
)
async def test_unknown_schemes_are_refused_naming_the_supported_ones(url: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await open_document_store(url)
    assert "sqlite:///" in caught.value.message
    assert "mongodb://" in caught.value.message
    assert "hunter2" not in str(caught.value.to_json())


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://admin:hunter2@127.0.0.1:27017",
        "mongodb://admin:hunter2@127.0.0.1:27017/",
        "mongodb://admin:hunter2@127.0.0.1:notaport/nsfl",
        "mongodb://admin:hunter2@127.0.0.1:27017/bad$name",
        "mongodb://admin:hunter2@127.0.0.1:27017/nsfl?noSuchOption=1&authSource=",
    ],
)
async def test_mongodb_urls_need_a_database_and_errors_hide_the_password(url: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await open_document_store(url)
    assert "hunter2" not in str(caught.value.to_json())
    assert "mongodb://" in caught.value.message
