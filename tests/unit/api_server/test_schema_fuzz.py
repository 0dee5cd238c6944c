"""Schema fuzzing: schemathesis drives every operation of ``/openapi.json`` and no answer is a 5xx.

The API server runs for real (aiohttp on a loopback port, the fake
scheduler and selector over gRPC with mutual TLS, the test PKI for
enrolment, SQLite and file storage in a temporary directory) in a thread with its own event loop, because schemathesis calls
it with the blocking ``requests`` client.  Cases come from both positive
(valid by the schema) and negative (violating it) generation, with an
admin token so that requests get past authentication into the handlers.
The number of examples per operation is bounded to keep the run short.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from api_server.app import bound_port, make_app
from api_server.settings import ApiSettings
from libs.store import open_document_store
from tests.fixtures.pki import TestPki
from tests.unit.api_server.conftest import ADMIN, EDITOR_A, bearer, write_token_file
from tests.unit.api_server.fakes import FakeJobControl, FakeSelector, start_fake_servers

EXAMPLES_PER_OPERATION = 15


class ServerThread(threading.Thread):
    """The API server and its fake dependencies on an event loop of their own."""

    def __init__(self, root: Path, pki: TestPki) -> None:
        super().__init__(name="api-server-under-fuzz", daemon=True)
        self.root = root
        self.pki = pki
        self.port = 0
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test through .error
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        store = await open_document_store(f"sqlite://{self.root}/nsfl.db")
        pki = self.pki
        grpc_servers, scheduler_port, selector_port = await start_fake_servers(
            FakeJobControl(store), FakeSelector(),
            scheduler_wire=pki.wire(pki.identity("scheduler")), selector_wire=pki.wire(pki.identity("selector")),
        )  # fmt: skip
        settings = ApiSettings(
            listen="127.0.0.1:0", scheduler_address=f"127.0.0.1:{scheduler_port}",
            selector_address=f"127.0.0.1:{selector_port}",
            state_dir=self.root, store_url=f"sqlite://{self.root}/nsfl.db",
            object_store_url=f"file://{self.root}/objects", token_file=write_token_file(self.root / "tokens.yaml"),
            max_model_bytes=64 * 1024, pki_dir=pki.directory.root, **pki.settings(pki.identity("api-server")),
        )  # fmt: skip
        runner = web.AppRunner(make_app(settings))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.port = bound_port(runner)
        self.ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()
            for grpc_server in grpc_servers:
                await grpc_server.stop(None)
            await store.close()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self.join(timeout=10)


@pytest.fixture
def server(tmp_path: Path, test_pki: TestPki) -> Iterator[str]:
    thread = ServerThread(tmp_path, test_pki)
    thread.start()
    assert thread.ready.wait(timeout=20), "the API server did not start"
    if thread.error is not None:
        raise thread.error
    base = f"http://127.0.0.1:{thread.port}"
    seed(base)
    try:
        yield base
    finally:
        thread.stop()


def seed(base: str) -> None:
    """A job and a model with a version in team-a, so some generated requests find something."""
    with requests.Session() as session:
        job = {"name": "seeded", "runtime": "pytorch", "taskEntry": "train"}
        assert session.post(f"{base}/api/v1/namespaces/team-a/jobs", json=job, headers=bearer(EDITOR_A)).ok
        model = {"name": "seeded", "runtime": "pytorch"}
        assert session.post(
            f"{base}/api/v1/namespaces/team-a/models", json=model, headers=bearer(EDITOR_A)
        ).ok


def test_no_generated_request_gets_a_server_error(server: str) -> None:
    document: dict[str, Any] = requests.get(f"{server}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    headers = bearer(ADMIN)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) >= 25
    with requests.Session() as session:
        for operation in operations:
            strategy = st.one_of(
                operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
                operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
            )

            @hypothesis.settings(
                max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate],
            )  # fmt: skip
            @hypothesis.given(case=strategy)
            def call(case: Any) -> None:
                response = case.call(base_url=server, session=session, headers=headers, timeout=15)
                case.validate_response(response, checks=[not_a_server_error], headers=headers)

            call()
