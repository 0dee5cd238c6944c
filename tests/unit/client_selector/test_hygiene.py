"""Registry hygiene over real mTLS servers: a per-source cap on client ids, and expiry after retention."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from client_selector.registry import ClientId
from client_selector.registry_store import RegistryStore
from libs.protos import selector_pb2
from libs.store import open_document_store
from tests.fixtures.pki import TestPki
from tests.unit.client_selector.fakes import (
    FakeTaskManager,
    callers,
    client_wire,
    eventually,
    running_selector,
    settings_for,
)


async def stored_ids(db: Path) -> list[str]:
    store = await open_document_store(f"sqlite://{db}")
    try:
        return sorted(r.client_id for r in await RegistryStore(store).load_all())
    finally:
        await store.close()


async def test_a_registration_flood_from_one_source_beyond_the_cap_is_refused_and_leaves_no_entries(
    tmp_path: Path, test_pki: TestPki
) -> None:
    db = tmp_path / "selector.db"
    fakes: list[FakeTaskManager] = []
    async with running_selector(settings_for(db, test_pki, max_clients_per_source=3)) as app:
        target = f"127.0.0.1:{app.port}"
        try:
            for n in range(3):
                fakes.append(FakeTaskManager(target, f"c{n}", wire=client_wire(test_pki, f"c{n}")))
                await fakes[-1].connect()
            for n in range(3, 12):
                flood = FakeTaskManager(target, f"c{n}", wire=client_wire(test_pki, f"c{n}"))
                fakes.append(flood)
                error = await flood.open_and_fail(selector_pb2.ClientMessage(register=flood.register))
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "127.0.0.1 already registered 3 client ids" in (error.details() or "")
                assert "max_clients_per_source" in (error.details() or "")
            assert [app.selector.record(ClientId(f"c{n}")) for n in range(3, 12)] == [None] * 9
            await fakes[0].close()
            again = FakeTaskManager(target, "c0", wire=client_wire(test_pki, "c0"))
            fakes.append(again)
            assert (await again.connect()).client_id == "c0", "a known id of the source may come back"
            async with callers(test_pki, app.port) as plane:
                listed = await plane.ListClients(selector_pb2.ListClientsRequest(include_lost=True))
            assert [(c.client_id, c.source) for c in listed.clients] == [
                ("c0", "127.0.0.1"), ("c1", "127.0.0.1"), ("c2", "127.0.0.1")]  # fmt: skip
        finally:
            for fake in fakes:
                await fake.close()
    assert await stored_ids(db) == ["c0", "c1", "c2"], "nothing of the refused ids was persisted"


async def test_a_client_away_past_the_retention_period_is_expired_from_the_registry_and_its_store(
    tmp_path: Path, test_pki: TestPki
) -> None:
    db = tmp_path / "selector.db"
    settings = settings_for(db, test_pki, client_retention_seconds=1.0)
    async with running_selector(settings) as app, callers(test_pki, app.port) as plane:
        stays = FakeTaskManager(f"127.0.0.1:{app.port}", "stays", wire=client_wire(test_pki, "stays"))
        leaves = FakeTaskManager(f"127.0.0.1:{app.port}", "leaves", wire=client_wire(test_pki, "leaves"))
        try:
            await stays.connect()
            await leaves.connect()
            await leaves.close()
            listed = await plane.ListClients(selector_pb2.ListClientsRequest(include_lost=True))
            info = {c.client_id: c for c in listed.clients}["leaves"]
            assert info.expires_at_unix == info.last_heartbeat_unix + 1.0, "shown in ListClients"
            assert info.expires_at_unix <= time.time() + 1.0

            async def gone() -> bool:
                listed = await plane.ListClients(selector_pb2.ListClientsRequest(include_lost=True))
                return [c.client_id for c in listed.clients] == ["stays"]

            await eventually(gone, within=5.0)
            await asyncio.sleep(0.2)
            assert await stored_ids(db) == ["stays"], "the store forgot it too"
            alive = (await plane.ListClients(selector_pb2.ListClientsRequest())).clients[0]
            assert alive.client_id == "stays" and alive.expires_at_unix > time.time(), "alive: pushed forward"
        finally:
            await stays.close()
            await leaves.close()
