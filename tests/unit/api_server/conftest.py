"""Fixtures: a real API server app on an in-process test client, a SQLite store and a file
object store in ``tmp_path``, and fake scheduler/selector gRPC servers on loopback port 0.

The gRPC links run with mutual TLS as in production: the API server has the test PKI's
``control/api-server`` certificate, the fakes ``control/scheduler`` and ``control/selector``,
and the API server's ``pki_dir`` is the test PKI (enrolment signs with its CA).

Four tokens cover the access rules: an admin for every namespace, an editor and a viewer of
``team-a``, and an editor of ``team-b``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api_server.app import make_app
from api_server.settings import ApiSettings
from libs.objects import FileObjectStore, ObjectStore
from libs.store import DocumentStore, open_document_store
from tests.fixtures.pki import TestPki
from tests.unit.api_server.fakes import FakeJobControl, FakeSelector, start_fake_servers

ADMIN = "admin-token-0123456789abcdef"
EDITOR_A = "editor-a-token-0123456789abcdef"
VIEWER_A = "viewer-a-token-0123456789abcdef"
EDITOR_B = "editor-b-token-0123456789abcdef"

Client = TestClient[web.Request, web.Application]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_token_file(path: Path) -> Path:
    tokens = [
        {"name": "admin", "token": ADMIN, "namespaces": ["*"], "role": "admin"},
        {"name": "editor-a", "token": EDITOR_A, "namespaces": ["team-a"], "role": "editor"},
        {"name": "viewer-a", "token": VIEWER_A, "namespaces": ["team-a"], "role": "viewer"},
        {"name": "editor-b", "token": EDITOR_B, "namespaces": ["team-b"], "role": "editor"},
    ]
    path.write_text(yaml.safe_dump({"tokens": tokens}), encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass
class Fakes:
    scheduler: FakeJobControl
    selector: FakeSelector
    servers: list[grpc.aio.Server]
    scheduler_port: int
    selector_port: int
    pki: TestPki


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DocumentStore]:
    """The fake scheduler's (and the tests') own connection to the store the API server reads."""
    opened = await open_document_store(f"sqlite://{tmp_path}/nsfl.db")
    yield opened
    await opened.close()


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    opened = FileObjectStore(tmp_path / "objects")
    yield opened
    await opened.close()


@pytest.fixture
async def fakes(store: DocumentStore, test_pki: TestPki) -> AsyncIterator[Fakes]:
    scheduler, selector = FakeJobControl(store), FakeSelector()
    servers, scheduler_port, selector_port = await start_fake_servers(
        scheduler, selector,
        scheduler_wire=test_pki.wire(test_pki.identity("scheduler")),
        selector_wire=test_pki.wire(test_pki.identity("selector")),
    )  # fmt: skip
    yield Fakes(scheduler, selector, servers, scheduler_port, selector_port, test_pki)
    for server in servers:
        await server.stop(None)


def make_settings(tmp_path: Path, fakes: Fakes, **changes: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "scheduler_address": f"127.0.0.1:{fakes.scheduler_port}",
        "selector_address": f"127.0.0.1:{fakes.selector_port}",
        "state_dir": tmp_path,
        "store_url": f"sqlite://{tmp_path}/nsfl.db",
        "object_store_url": f"file://{tmp_path}/objects",
        "token_file": write_token_file(tmp_path / "tokens.yaml"),
        "max_model_bytes": 256 * 1024,
        "rpc_timeout_seconds": 5.0,
        "ready_timeout_seconds": 1.0,
        **fakes.pki.settings(fakes.pki.identity("api-server")),
        "pki_dir": fakes.pki.directory.root,
        **changes,
    }
    settings = ApiSettings(**values)
    settings.validate()
    return settings


@pytest.fixture
def settings(tmp_path: Path, fakes: Fakes) -> ApiSettings:
    return make_settings(tmp_path, fakes)


@contextlib.asynccontextmanager
async def running_client(settings: ApiSettings) -> AsyncIterator[Client]:
    """The app built from ``settings`` behind an in-process HTTP client (opened and closed around the block)."""
    async with TestClient(TestServer(make_app(settings))) as client:
        yield client


@pytest.fixture
async def client(settings: ApiSettings) -> AsyncIterator[Client]:
    async with running_client(settings) as opened:
        yield opened
