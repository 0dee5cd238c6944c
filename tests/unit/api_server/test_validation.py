"""Bad input is a 4xx whose message names the problem, and nothing is stored or forwarded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from libs.store import DocumentStore
from tests.unit.api_server.conftest import EDITOR_A, Client, Fakes, bearer
from tests.unit.api_server.test_jobs import JOBS, SPEC


async def assert_nothing_stored(store: DocumentStore, fakes: Fakes) -> None:
    assert await store.count("jobs") == 0
    assert fakes.scheduler.calls == []


async def refused(
    client: Client, body: str | bytes, content_type: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    response = await client.post(JOBS, data=body, headers={**bearer(EDITOR_A), "Content-Type": content_type})
    error = (await response.json())["error"]
    return response.status, error


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"learningRate": 0.1}, "spec.learningRate: unknown field"),
        ({"rounds": "ten"}, "spec.rounds: must be an integer"),
        ({"redundancy": 3.0}, "spec.redundancy: must be between 1.0 and 2.0"),
        ({"rounds": 0, "clientsPerRound": 100000}, "spec.rounds: must be between"),
        ({"runtime": "jax"}, "spec.runtime: must be one of"),
        ({"name": "Not_A_DNS_Label"}, "spec.name: must be a DNS-1123 label"),
        ({"modelPath": "../team-b/models/m/1/model.safetensors"}, "spec.modelPath"),
        ({"modelPath": "/etc/passwd"}, "spec.modelPath"),
        ({"modelPath": "models/missing/1/model.safetensors"}, "spec.modelPath: no object"),
        ({"modelRef": {"name": "missing"}}, "spec.modelRef: model 'missing' not found"),
        (
            {"checkpointRef": {"job": "earlier", "round": 3}},
            "spec.checkpointRef: job 'earlier' has no checkpoint",
        ),
    ],
)
async def test_an_invalid_spec_is_400_naming_the_field_and_nothing_is_stored(
    client: Client, store: DocumentStore, fakes: Fakes, change: dict[str, Any], names: str
) -> None:
    status, error = await refused(client, json.dumps({**SPEC, **change}))
    assert status == 400
    assert error["code"] == "ValidationFailed"
    assert names in error["message"]
    assert any(entry["path"].startswith(names.split(":")[0]) for entry in error["details"]["errors"])
    await assert_nothing_stored(store, fakes)


async def test_malformed_yaml_is_400_naming_the_line(
    client: Client, store: DocumentStore, fakes: Fakes
) -> None:
    status, error = await refused(
        client, "name: mnist\nruntime: [pytorch\ntaskEntry: x\n", "application/yaml"
    )
    assert status == 400
    assert error["message"].startswith("request.yaml:")
    assert error["details"]["errors"][0]["line"] >= 2
    await assert_nothing_stored(store, fakes)


@pytest.mark.parametrize(
    ("body", "content_type", "names"),
    [
        ('{"name": "a", "name": "b"}', "application/json", "duplicate key 'name'"),
        ("[1, 2]", "application/json", "must hold a JSON object"),
        ("{'name': 1", "application/json", "request.json:1:2"),
        (b"\xff\xfe", "application/json", "not UTF-8"),
        ("name: x", "text/html", "Content-Type 'text/html' is not accepted"),
        ("a: &a [*a]", "application/yaml", "request.yaml"),
    ],
)
async def test_bodies_that_are_not_a_spec_are_400_saying_why(
    client: Client, store: DocumentStore, fakes: Fakes, body: str | bytes, content_type: str, names: str
) -> None:
    status, error = await refused(client, body, content_type)
    assert status == 400
    assert names in error["message"]
    await assert_nothing_stored(store, fakes)


async def test_an_oversized_json_body_is_413_before_it_is_read(
    client: Client, store: DocumentStore, fakes: Fakes
) -> None:
    """The server answers a huge declared Content-Length without waiting for a byte of the body."""
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"POST {JOBS} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {EDITOR_A}\r\n"
        'Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{"name":'.encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    writer.close()
    await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 413")
    await assert_nothing_stored(store, fakes)


async def test_an_oversized_chunked_body_is_413_once_it_passes_the_limit(
    client: Client, store: DocumentStore, fakes: Fakes
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "mnist", "description": "'
        for _ in range(40):
            yield b"x" * 65536

    response = await client.post(
        JOBS, data=chunks(), headers={**bearer(EDITOR_A), "Content-Type": "application/json"}
    )
    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == "PayloadTooLarge" and "1048576" in error["message"]
    await assert_nothing_stored(store, fakes)
