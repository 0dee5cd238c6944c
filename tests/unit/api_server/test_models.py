"""The model registry over REST: create, streamed upload and download, versions, lineage."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from safetensors.numpy import save

from libs.objects import ObjectStore, output_key
from libs.store import DocumentStore
from tests.unit.api_server.conftest import EDITOR_A, VIEWER_A, Client, Fakes, bearer
from tests.unit.api_server.test_jobs import JOBS, SPEC, put_job

MODELS = "/api/v1/namespaces/team-a/models"


def weights(seed: int = 0, size: int = 1000) -> bytes:
    rng = np.random.default_rng(seed)
    return save({"dense.weight": rng.standard_normal((size,)).astype(np.float32),
                 "dense.bias": np.zeros((10,), dtype=np.float32)})  # fmt: skip


async def create(client: Client, name: str = "digits", runtime: str = "pytorch") -> dict[str, Any]:
    response = await client.post(
        MODELS,
        json={"name": name, "runtime": runtime, "description": "a digits net"},
        headers=bearer(EDITOR_A),
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def chunked(payload: bytes, size: int = 7919) -> AsyncIterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


async def upload(client: Client, payload: bytes | AsyncIterator[bytes], query: str = "") -> Any:
    return await client.put(
        f"{MODELS}/digits/versions{query}", data=payload,
        headers={**bearer(EDITOR_A), "Content-Type": "application/octet-stream"},
    )  # fmt: skip


async def assert_no_versions(client: Client, objects: ObjectStore) -> None:
    model = await (await client.get(f"{MODELS}/digits", headers=bearer(VIEWER_A))).json()
    assert model["versions"] == [] and model["latest"] is None
    assert await objects.list("team-a/models/") == []


async def test_a_streamed_upload_downloads_back_identical_with_its_checksum(client: Client) -> None:
    await create(client)
    payload = weights()
    digest = hashlib.sha256(payload).hexdigest()
    response = await upload(client, chunked(payload), f"?sha256={digest.upper()}&description=first")
    assert response.status == 201, await response.text()
    version = await response.json()
    assert version["version"] == 1 and version["sha256"] == digest and version["size"] == len(payload)
    assert response.headers["Location"].endswith("/digits/versions/1")
    download = await client.get(f"{MODELS}/digits/versions/1/download", headers=bearer(VIEWER_A))
    assert download.status == 200
    assert download.headers["ETag"] == f'"{digest}"' and download.headers["X-Nsfl-Sha256"] == digest
    assert int(download.headers["Content-Length"]) == len(payload)
    assert await download.read() == payload


async def test_versions_count_up_and_the_latest_follows(client: Client) -> None:
    await create(client)
    for seed in range(3):
        assert (await upload(client, weights(seed))).status == 201
    listed = await (await client.get(f"{MODELS}/digits/versions", headers=bearer(VIEWER_A))).json()
    assert [v["version"] for v in listed["versions"]] == [1, 2, 3]
    assert (await client.delete(f"{MODELS}/digits/versions/3", headers=bearer(EDITOR_A))).status == 204
    assert (await upload(client, weights(9))).status == 201
    model = await (await client.get(f"{MODELS}/digits", headers=bearer(VIEWER_A))).json()
    assert [v["version"] for v in model["versions"]] == [1, 2, 4]  # 3 is never reused
    assert model["latest"] == 4
    gone = await client.get(f"{MODELS}/digits/versions/3/download", headers=bearer(VIEWER_A))
    assert gone.status == 404


async def test_a_checksum_mismatch_is_400_and_nothing_is_stored(client: Client, objects: ObjectStore) -> None:
    await create(client)
    response = await upload(client, weights(), f"?sha256={'0' * 64}")
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "ChecksumMismatch"
    await assert_no_versions(client, objects)


async def test_an_oversized_model_is_413_and_nothing_is_stored(client: Client, objects: ObjectStore) -> None:
    await create(client)
    big = weights(size=100_000)  # 400 kB, over the 256 KiB test limit
    declared = await upload(client, big)
    assert declared.status == 413
    assert (await declared.json())["error"]["code"] == "PayloadTooLarge"
    streamed = await upload(client, chunked(big, 65536))
    assert streamed.status == 413
    await assert_no_versions(client, objects)


async def test_an_upload_that_is_not_safetensors_is_400_and_nothing_is_stored(
    client: Client, objects: ObjectStore
) -> None:
    await create(client)
    good = weights()
    header_length = int.from_bytes(good[:8], "little")
    cases = {
        b"PK\x03\x04 a zip file, not weights": "header length",
        (5).to_bytes(8, "little") + b"nope!": "not JSON",
        good[:-4]: "truncated",
        good + b"tail": "longer than its header",
        good[:8] + good[8 : 8 + header_length].replace(b"F32", b"F99") + good[8 + header_length :]: "dtype",
    }
    for payload, problem in cases.items():
        response = await upload(client, chunked(payload))
        assert response.status == 400, problem
        assert problem in (await response.json())["error"]["message"]
    await assert_no_versions(client, objects)


async def test_an_upload_to_a_model_that_does_not_exist_is_404(client: Client) -> None:
    response = await upload(client, weights())
    assert response.status == 404
    assert "digits" in (await response.json())["error"]["message"]


async def test_models_are_listed_and_a_duplicate_name_is_409(client: Client) -> None:
    for name in ("b-model", "a-model", "c-model"):
        await create(client, name)
    duplicate = await client.post(
        MODELS, json={"name": "a-model", "runtime": "pytorch"}, headers=bearer(EDITOR_A)
    )
    assert duplicate.status == 409
    page = await (await client.get(f"{MODELS}?limit=2", headers=bearer(VIEWER_A))).json()
    assert [m["name"] for m in page["models"]] == ["a-model", "b-model"]
    rest = await (
        await client.get(f"{MODELS}?pageToken={page['nextPageToken']}", headers=bearer(VIEWER_A))
    ).json()
    assert [m["name"] for m in rest["models"]] == ["c-model"] and rest["nextPageToken"] is None


async def test_a_create_model_body_with_unknown_or_wrong_fields_is_400_naming_them(client: Client) -> None:
    response = await client.post(
        MODELS, json={"name": "x", "runtime": "jax", "owner": "me"}, headers=bearer(EDITOR_A)
    )
    assert response.status == 400
    message = (await response.json())["error"]["message"]
    assert "body.runtime: must be one of" in message and "body.owner: unknown field" in message


async def test_deleting_a_model_removes_every_version(client: Client, objects: ObjectStore) -> None:
    await create(client)
    await upload(client, weights(1))
    await upload(client, weights(2))
    assert (await client.delete(f"{MODELS}/digits", headers=bearer(EDITOR_A))).status == 204
    assert (await client.get(f"{MODELS}/digits", headers=bearer(VIEWER_A))).status == 404
    assert await objects.list("team-a/models/") == []


async def finished_job(store: DocumentStore, objects: ObjectStore, payload: bytes) -> None:
    key = output_key("team-a", "trained", "model.safetensors")
    info = await objects.put(key, payload)
    await put_job(store, "trained", "FINISHED")
    document = await store.get("jobs", "team-a/trained")
    status = {
        **document.data["status"],
        "round": 3,
        "finalModel": {"key": key, "sha256": info.sha256, "size": info.size},
    }
    await store.patch("jobs", document.key, {"status": status})
    for number, accepted in ((1, ["c1", "c2"]), (2, ["c2", "c3"]), (3, ["c1", "c3"])):
        await store.upsert("rounds", f"team-a/trained#{number:06d}", {
            "namespace": "team-a", "job": "trained", "round": number, "accepted": accepted, "createdAt": time.time(),
        })  # fmt: skip


async def test_a_finished_jobs_model_is_registered_with_lineage_in_one_call(
    client: Client, store: DocumentStore, objects: ObjectStore, fakes: Fakes
) -> None:
    payload = weights(7)
    await finished_job(store, objects, payload)
    response = await client.post(
        f"{JOBS}/trained:register-model", json={"model": "digits"}, headers=bearer(EDITOR_A)
    )
    assert response.status == 201, await response.text()
    version = await response.json()
    assert version["model"] == "digits" and version["version"] == 1
    assert version["lineage"] == {"job": "trained", "round": 3, "clients": ["c1", "c2", "c3"]}
    assert version["sha256"] == hashlib.sha256(payload).hexdigest()
    model = await (await client.get(f"{MODELS}/digits", headers=bearer(VIEWER_A))).json()
    assert model["runtime"] == "pytorch"  # created from the job's runtime
    download = await client.get(f"{MODELS}/digits/versions/1/download", headers=bearer(VIEWER_A))
    assert await download.read() == payload
    # A later job can start from the registered model.
    started = await client.post(JOBS, json={**SPEC, "name": "fine-tune", "modelRef": {"name": "digits", "version": 1}},
                                headers=bearer(EDITOR_A))  # fmt: skip
    assert started.status == 201, await started.text()


async def test_registering_from_a_job_that_has_not_finished_is_409(
    client: Client, store: DocumentStore
) -> None:
    await put_job(store, "live", "RUNNING")
    response = await client.post(
        f"{JOBS}/live:register-model", json={"model": "digits"}, headers=bearer(EDITOR_A)
    )
    assert response.status == 409
    assert "FINISHED" in (await response.json())["error"]["message"]


async def test_a_job_can_start_from_a_checkpoint_of_another_job(client: Client, store: DocumentStore) -> None:
    await put_job(store, "earlier", "FINISHED")
    await store.upsert("checkpoints", "team-a/earlier#000002", {
        "jobId": "team-a/earlier", "namespace": "team-a", "job": "earlier", "round": 2,
        "key": "team-a/checkpoints/earlier/000002.safetensors", "sha256": "ab" * 32, "size": 1,
    })  # fmt: skip
    spec = {**SPEC, "name": "resumed", "checkpointRef": {"job": "earlier", "round": 2}}
    response = await client.post(JOBS, json=spec, headers=bearer(EDITOR_A))
    assert response.status == 201, await response.text()


async def first_answer(client: Client, headers: str) -> bytes:
    """The first status line the server sends after the request head (no body is sent)."""
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"PUT {MODELS}/digits/versions HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode())
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), timeout=5)
    writer.close()
    await writer.wait_closed()
    return line


async def test_expect_continue_is_answered_only_for_uploads_that_will_be_read(client: Client) -> None:
    await create(client)
    auth = f"Authorization: Bearer {EDITOR_A}\r\nExpect: 100-continue\r\n"
    assert (await first_answer(client, auth + "Content-Length: 1000\r\n")).startswith(b"HTTP/1.1 100")
    assert (await first_answer(client, auth + "Content-Length: 10000000000\r\n")).startswith(b"HTTP/1.1 413")
    anonymous = "Expect: 100-continue\r\nContent-Length: 1000\r\n"
    assert (await first_answer(client, anonymous)).startswith(b"HTTP/1.1 401")
