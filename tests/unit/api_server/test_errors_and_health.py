"""The error boundary, dependency failures, health, readiness and metrics."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api_server.app import make_app
from api_server.auth import Caller
from libs.jobspec import JobSpec
from libs.store import DocumentStore, open_document_store
from tests.unit.api_server.conftest import (
    EDITOR_A,
    VIEWER_A,
    Client,
    Fakes,
    bearer,
    make_settings,
    running_client,
)
from tests.unit.api_server.test_jobs import JOBS, SPEC, put_job


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_scheduler_that_is_down_is_503_with_retry_after(
    tmp_path: Path, fakes: Fakes, store: DocumentStore
) -> None:
    settings = make_settings(tmp_path, fakes, scheduler_address=f"127.0.0.1:{closed_port()}")
    async with running_client(settings) as client:
        response = await client.post(JOBS, json=SPEC, headers=bearer(EDITOR_A))
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        error = (await response.json())["error"]
        assert error == {
            "code": "Unavailable", "message": "the job scheduler is unavailable; retry later",
            "details": {"dependency": "the job scheduler"},
        }  # fmt: skip
        assert "127.0.0.1" not in await response.text()
        ready = await client.get("/readyz")
        assert ready.status == 503 and ready.headers["Retry-After"] == "5"
        assert (await ready.json())["error"]["details"]["checks"] == {
            "store": "ok",
            "scheduler": "unavailable",
        }
        # Reads come from the store and keep working while the scheduler is away.
        await put_job(store, "kept", "RUNNING")
        assert (await client.get(f"{JOBS}/kept", headers=bearer(VIEWER_A))).status == 200


async def test_a_selector_that_is_down_is_503(tmp_path: Path, fakes: Fakes) -> None:
    settings = make_settings(tmp_path, fakes, selector_address=f"127.0.0.1:{closed_port()}")
    async with running_client(settings) as client:
        response = await client.get("/api/v1/clients", headers=bearer(VIEWER_A))
        assert response.status == 503 and "Retry-After" in response.headers


async def test_clients_are_listed_with_liveness(client: Client, fakes: Fakes) -> None:
    everyone = await (await client.get("/api/v1/clients", headers=bearer(VIEWER_A))).json()
    assert [(c["clientId"], c["liveness"]) for c in everyone["clients"]] == [
        ("hospital-a", "alive"),
        ("hospital-b", "lost"),
    ]
    assert everyone["clients"][0]["datasets"] == [{"name": "mnist", "samples": 600, "tags": []}]
    # Registry hygiene, as the selector reports it: where each registered from, when it expires.
    assert [(c["source"], c["expiresAt"]) for c in everyone["clients"]] == [
        ("10.0.0.7", 2_000_000_000.0),
        (None, None),
    ]
    alive = await (await client.get("/api/v1/clients?includeLost=false", headers=bearer(VIEWER_A))).json()
    assert [c["clientId"] for c in alive["clients"]] == ["hospital-a"]


async def test_health_and_readiness(client: Client) -> None:
    assert await (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {"status": "ready", "checks": {"store": "ok", "scheduler": "ok"}}


async def test_unknown_routes_and_methods_answer_in_the_error_shape(client: Client) -> None:
    missing = await client.get("/api/v1/nothing-here", headers=bearer(VIEWER_A))
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "NotFound"
    wrong = await client.put(JOBS, headers=bearer(EDITOR_A))
    assert wrong.status == 405
    error = (await wrong.json())["error"]
    assert error["code"] == "MethodNotAllowed" and error["details"]["allowed"] == ["GET", "POST"]
    assert "GET" in wrong.headers["Allow"]


class ExplodingScheduler:
    """A scheduler adapter with a bug: its exception text must never reach a caller."""

    async def submit(self, caller: Caller, namespace: str, spec: JobSpec) -> dict[str, Any]:
        raise RuntimeError("internal detail: /var/lib/secret-path password=hunter2")

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_an_unexpected_error_is_500_with_the_public_message_only(
    tmp_path: Path, fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(make_settings(tmp_path, fakes), scheduler=ExplodingScheduler())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        response = await client.post(JOBS, json=SPEC, headers={**bearer(EDITOR_A), "X-Request-Id": "req-42"})
        assert response.status == 500
        body = await response.json()
        assert body == {"error": {"code": "Internal", "message": "internal error; see the service logs",
                                  "details": {"requestId": "req-42"}}}  # fmt: skip
        assert response.headers["X-Request-Id"] == "req-42"
    assert "hunter2" in caplog.text and "req-42" in caplog.text


async def test_metrics_count_requests_by_route_template_and_status(client: Client) -> None:
    await client.get(f"{JOBS}/one", headers=bearer(VIEWER_A))
    await client.get(f"{JOBS}/two", headers=bearer(VIEWER_A))
    await client.get("/nowhere")
    text = await (await client.get("/metrics")).text()
    assert (
        'nsfl_api_requests_total{method="GET",route="/api/v1/namespaces/{ns}/jobs/{name}",status="404"} 2'
        in text
    )
    assert 'nsfl_api_requests_total{method="GET",route="unmatched",status="404"} 1' in text
    assert "nsfl_api_request_duration_seconds_bucket" in text and "/one" not in text


async def test_the_server_banner_does_not_name_versions(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.headers["Server"] == "nsfl-api"


async def test_a_store_that_is_down_is_503_with_the_public_message_only(tmp_path: Path, fakes: Fakes) -> None:
    closed = await open_document_store(f"sqlite://{tmp_path}/other.db")
    await closed.close()
    app = make_app(make_settings(tmp_path, fakes), store=closed)
    async with TestClient(TestServer(app)) as client:
        response = await client.get(JOBS, headers=bearer(VIEWER_A))
        assert response.status == 503 and response.headers["Retry-After"] == "5"
        error = (await response.json())["error"]
        assert error["message"] == "a dependency is unavailable; retry later"
        assert (await client.get("/readyz")).status == 503
