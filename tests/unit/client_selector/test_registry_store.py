"""Client records survive a round trip through the SQLite document store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client_selector.registry import (
    ClientId,
    ClientRecord,
    DatasetInfo,
    JobId,
    Registration,
    Resources,
    register,
    reserve,
)
from client_selector.registry_store import COLLECTION, RegistryStore, record_from_data, record_to_data
from libs.store import DocumentStore, open_document_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DocumentStore]:
    opened = await open_document_store(f"sqlite://{tmp_path / 'selector.db'}")
    yield opened
    await opened.close()


def sample_record() -> ClientRecord:
    record = register(
        None,
        Registration(
            client_id=ClientId("hospital-1"),
            runtimes=("pytorch", "tensorflow"),
            datasets=(DatasetInfo("digits", 600, ("train", "eval")),),
            labels={"nsfl.io/zone": "eu", "tier": "gold"},
            resources=Resources(cpus=4.5, memory_mb=8000, gpus=1, disk_mb=100),
            max_parallel_tasks=2,
            version="1.0",
        ),
        now=100.0,
        source="10.0.0.7",
    )
    return reserve(record, JobId("ns/a"), 3, now=100.0, seconds=60.0)


async def test_a_saved_record_loads_back_equal_but_not_connected(store: DocumentStore) -> None:
    record = sample_record()
    registry = RegistryStore(store)
    await registry.save(record)
    [loaded] = await RegistryStore(store).load_all()
    assert loaded == record_from_data(record_to_data(record))
    assert loaded.runtimes == record.runtimes and loaded.datasets == record.datasets
    assert loaded.connected is False and loaded.labels == {"nsfl.io/zone": "eu", "tier": "gold"}
    assert loaded.reservations[0].expires_at == 160.0 and loaded.picks == {"ns/a": 1}
    assert loaded.source == "10.0.0.7"


async def test_a_document_from_before_sources_were_kept_loads_with_no_source(store: DocumentStore) -> None:
    data = record_to_data(sample_record())
    del data["source"]
    await store.upsert(COLLECTION, "hospital-1", data)
    [loaded] = await RegistryStore(store).load_all()
    assert loaded.source == ""


async def test_a_deleted_record_is_gone_and_deleting_an_unknown_one_is_harmless(store: DocumentStore) -> None:
    registry = RegistryStore(store)
    await registry.save(sample_record())
    await registry.delete(ClientId("hospital-1"))
    await registry.delete(ClientId("never-stored"))
    assert await registry.load_all() == []


async def test_an_unreadable_document_is_skipped_not_fatal(store: DocumentStore) -> None:
    await store.upsert(COLLECTION, "broken", {"client_id": "broken"})
    await RegistryStore(store).save(sample_record())
    assert [r.client_id for r in await RegistryStore(store).load_all()] == ["hospital-1"]
