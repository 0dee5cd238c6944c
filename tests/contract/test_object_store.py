"""Contract: every ObjectStore backend keeps the same promises (DESIGN §3, §7; STYLE habit 4).

Each test runs once per backend, ``[files]`` (local files under a temporary
root) and ``[s3]`` (the minio client against moto's S3 server on loopback).
A few tests at the end concern one backend only: symlinks for files, an
outage and foreign objects for S3.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from libs.errors import (
    ChecksumMismatch,
    InvalidKey,
    NotFound,
    PathOutsideRoot,
    PayloadTooLarge,
    Unavailable,
    ValidationFailed,
)
from libs.objects import ObjectInfo, ObjectStore, open_object_store, round_key
from tests.fixtures.s3 import RunningMotoServer, S3Endpoint

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


def names_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if not path.is_dir())


async def collect(store: ObjectStore, key: str, **kwargs: Any) -> list[bytes]:
    return [chunk async for chunk in store.open(key, **kwargs)]


@pytest.fixture(params=["files", "s3"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    if request.param == "files":
        return f"file://{tmp_path / 'objects'}", {}
    endpoint: S3Endpoint = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    credentials = {"access_key": endpoint.access_key, "secret_key": endpoint.secret_key}
    return f"s3://{bucket}?endpoint={endpoint.url}", credentials


@pytest.fixture
async def store(store_location: tuple[str, dict[str, Any]]) -> AsyncIterator[ObjectStore]:
    url, options = store_location
    opened = open_object_store(url, **options)
    yield opened
    await opened.close()


# -- put, read, stat ---------------------------------------------------------------------------


async def test_put_bytes_then_stat_read_and_exists_agree(store: ObjectStore) -> None:
    data = b"global model weights"
    info = await store.put("ns/models/m/1/model.safetensors", data)
    assert info == ObjectInfo(key="ns/models/m/1/model.safetensors", size=len(data), sha256=sha(data))
    assert await store.stat(info.key) == info
    assert await store.read(info.key) == data
    assert await store.exists(info.key)
    assert isinstance(store, ObjectStore)


async def test_put_accepts_bytearray_and_memoryview(store: ObjectStore) -> None:
    await store.put("a/bytearray", bytearray(b"abc"))
    await store.put("a/memoryview", memoryview(b"xyzxyz")[2:5])
    assert await store.read("a/bytearray") == b"abc"
    assert await store.read("a/memoryview") == b"zxy"


async def test_put_stream_of_uneven_chunks_stores_their_concatenation(store: ObjectStore) -> None:
    chunks = [b"a", b"", b"bc" * 1000, os.urandom(3 * MiB + 7), b"tail"]
    info = await store.put("ns/jobs/j1/rounds/000001/delta", stream(*chunks))
    expected = b"".join(chunks)
    assert (info.size, info.sha256) == (len(expected), sha(expected))
    assert await store.read(info.key) == expected


async def test_empty_object_round_trips(store: ObjectStore) -> None:
    info = await store.put("empty", b"")
    assert info == ObjectInfo(key="empty", size=0, sha256=sha(b""))
    assert await store.read("empty") == b""
    assert await collect(store, "empty") == []


async def test_put_replaces_an_existing_object(store: ObjectStore) -> None:
    await store.put("k", b"old")
    info = await store.put("k", b"newer")
    assert await store.read("k") == b"newer"
    assert await store.stat("k") == info


async def test_open_yields_chunks_no_larger_than_chunk_size(store: ObjectStore) -> None:
    data = os.urandom(100_000)
    await store.put("k", data)
    chunks = await collect(store, "k", chunk_size=30_000)
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) <= 30_000
    assert len(chunks) >= 4


async def test_open_from_an_offset_streams_the_rest(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    await store.put("k", data)
    assert b"".join(await collect(store, "k", offset=1000, chunk_size=777)) == data[1000:]
    assert await collect(store, "k", offset=len(data)) == []
    with pytest.raises(ValidationFailed):
        await collect(store, "k", offset=len(data) + 1)


async def test_open_rejects_bad_chunk_size_and_offset_at_once(store: ObjectStore) -> None:
    with pytest.raises(ValidationFailed):
        store.open("k", chunk_size=0)
    with pytest.raises(ValidationFailed):
        store.open("k", offset=-1)


async def test_put_file_and_get_file_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(2 * MiB + 3))
    info = await store.put_file("ns/outputs/j1/final.safetensors", source)
    target = tmp_path / "downloads" / "final.safetensors"
    target.parent.mkdir()
    assert await store.get_file(info.key, target) == info
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["final.safetensors"]


async def test_layout_keys_are_storable(store: ObjectStore) -> None:
    key = round_key("ns", "job-1", 3, "clients/c1/delta.safetensors")
    await store.put(key, b"d")
    assert [info.key for info in await store.list("ns/jobs/job-1/rounds/")] == [key]


# -- listing and deleting --------------------------------------------------------------------


async def test_list_returns_objects_under_a_key_prefix_sorted_by_key(store: ObjectStore) -> None:
    keys = ["ns/jobs/j10/x", "ns/jobs/j1/rounds/2/b", "ns/jobs/j1/rounds/1/a", "ns/jobs/j1/z", "ns/models/m"]
    for index, key in enumerate(keys):
        await store.put(key, b"x" * index)
    listed = await store.list("ns/jobs/j1/")
    assert [info.key for info in listed] == ["ns/jobs/j1/rounds/1/a", "ns/jobs/j1/rounds/2/b", "ns/jobs/j1/z"]
    assert listed[0] == ObjectInfo(key="ns/jobs/j1/rounds/1/a", size=2, sha256=sha(b"xx"))
    assert [info.key for info in await store.list("ns/jobs/j1")] == sorted(keys[:4])
    assert [info.key for info in await store.list()] == sorted(keys)
    assert await store.list("other/") == []


async def test_delete_says_whether_there_was_an_object(store: ObjectStore) -> None:
    await store.put("a/b/c", b"1")
    assert await store.delete("a/b/c") is True
    assert await store.delete("a/b/c") is False
    assert not await store.exists("a/b/c")
    assert await store.list() == []


async def test_delete_prefix_removes_exactly_what_is_under_it(store: ObjectStore) -> None:
    for key in ["ns/jobs/j1/a", "ns/jobs/j1/rounds/1/b", "ns/jobs/j10/c", "ns/models/m"]:
        await store.put(key, b"x")
    assert await store.delete_prefix("ns/jobs/j1/") == 2
    assert [info.key for info in await store.list()] == ["ns/jobs/j10/c", "ns/models/m"]
    assert await store.delete_prefix("ns/jobs/j1/") == 0
    with pytest.raises(InvalidKey):
        await store.delete_prefix("")
    await store.put("ns/jobs/j1/again", b"y")  # the emptied place is usable again
    assert await store.read("ns/jobs/j1/again") == b"y"


# -- integrity and limits ------------------------------------------------------------------------


async def test_expected_sha256_that_matches_is_accepted_in_any_case(store: ObjectStore) -> None:
    data = b"verified"
    info = await store.put("k", stream(data), expected_sha256=sha(data).upper())
    assert info.sha256 == sha(data)


async def test_checksum_mismatch_keeps_the_previous_object_and_adds_nothing(store: ObjectStore) -> None:
    previous = await store.put("ns/k", b"previous")
    with pytest.raises(ChecksumMismatch):
        await store.put("ns/k", stream(b"tampered"), expected_sha256=sha(b"intended"))
    with pytest.raises(ChecksumMismatch):
        await store.put("ns/new", b"tampered", expected_sha256=sha(b"intended"))
    assert await store.read("ns/k") == b"previous"
    assert await store.stat("ns/k") == previous
    assert await store.list() == [previous]


async def test_malformed_expected_sha256_is_a_validation_error(store: ObjectStore) -> None:
    with pytest.raises(ValidationFailed):
        await store.put("k", b"x", expected_sha256="not-a-digest")
    assert not await store.exists("k")


async def test_payload_over_max_size_stores_nothing_and_stops_reading(store: ObjectStore) -> None:
    await store.put("k", b"small")
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"z" * 1000

    with pytest.raises(PayloadTooLarge):
        await store.put("k", endless(), max_size=10_000)
    with pytest.raises(PayloadTooLarge):
        await store.put("other", b"z" * 11, max_size=10)
    assert pulled == 11
    assert await store.read("k") == b"small"
    assert [info.key for info in await store.list()] == ["k"]
    assert (await store.put("exact", b"z" * 10, max_size=10)).size == 10


async def test_a_failing_stream_stores_nothing(store: ObjectStore) -> None:
    await store.put("k", b"kept")

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial data"
        raise ConnectionResetError("sender went away")

    with pytest.raises(ConnectionResetError):
        await store.put("k", broken())
    assert await store.read("k") == b"kept"
    assert [info.key for info in await store.list()] == ["k"]


async def test_put_rejects_data_that_is_not_bytes(store: ObjectStore) -> None:
    with pytest.raises(ValidationFailed):
        await store.put("k", "text")  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed):
        await store.put("k", stream(b"ok", "text"))  # type: ignore[arg-type]
    assert await store.list() == []


async def test_a_20_mb_stream_round_trips_intact(store: ObjectStore) -> None:
    block = os.urandom(MiB)
    blocks = [bytes([index]) + block[1:] for index in range(20)]
    info = await store.put("ns/models/big/1/model.safetensors", stream(*blocks))
    assert info.size == 20 * MiB
    digest = hashlib.sha256()
    async for chunk in store.open(info.key):
        assert len(chunk) <= MiB
        digest.update(chunk)
    assert digest.hexdigest() == info.sha256 == sha(b"".join(blocks))


# -- missing and invalid keys ------------------------------------------------------------------


async def test_a_missing_key_is_not_found(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        await store.stat("no/such/key")
    with pytest.raises(NotFound):
        await store.read("no/such/key")
    with pytest.raises(NotFound):
        await collect(store, "no/such/key")
    with pytest.raises(NotFound):
        await store.get_file("no/such/key", tmp_path / "out")
    assert names_in(tmp_path) == []
    assert await store.exists("no/such/key") is False
    assert await store.delete("no/such/key") is False


INVALID_KEYS = {
    "parent": "../x",
    "absolute": "/abs",
    "empty-segment": "a//b",
    "dot-segment": "a/./b",
    "backslash": "a\\b",
    "nul": "a\x00b",
    "empty": "",
    "trailing-slash": "a/",
    "traversal": "x/../../etc/passwd",
    "newline": "a\nb",
}


@pytest.mark.parametrize("key", INVALID_KEYS.values(), ids=INVALID_KEYS.keys())
async def test_invalid_keys_are_refused_by_every_method(store: ObjectStore, key: str, tmp_path: Path) -> None:
    refused = (InvalidKey, PathOutsideRoot)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.put(key, b"x"),
        lambda: store.put(key, stream(b"x")),
        lambda: store.stat(key),
        lambda: store.read(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.put_file(key, tmp_path / "whatever"),
        lambda: store.get_file(key, tmp_path / "out"),
    ]
    for call in calls:
        with pytest.raises(refused):
            await call()
    with pytest.raises(refused):
        store.open(key)  # refused before any iteration
    if key:  # the empty prefix is valid for list (everything) and refused by delete_prefix
        with pytest.raises(refused):
            await store.list(key + "/")
        with pytest.raises(refused):
            await store.delete_prefix(key + "/")
    assert not (tmp_path / "out").exists()


# -- files only ---------------------------------------------------------------------------------


@pytest.fixture
async def file_store(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    opened = open_object_store(f"file://{tmp_path / 'root'}")
    yield opened
    await opened.close()


async def test_files_a_symlinked_directory_leading_outside_is_refused(
    file_store: ObjectStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (tmp_path / "root" / "ns").symlink_to(outside, target_is_directory=True)
    for call in (
        lambda: file_store.read("ns/secret"),
        lambda: file_store.stat("ns/secret"),
        lambda: file_store.put("ns/planted", b"x"),
        lambda: file_store.put("ns/secret", stream(b"overwrite")),
        lambda: file_store.delete("ns/secret"),
        lambda: file_store.list("ns/"),
    ):
        with pytest.raises(PathOutsideRoot):
            await call()
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"


async def test_files_a_symlinked_object_is_refused_even_inside_the_root(
    file_store: ObjectStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"outside")
    root = tmp_path / "root"
    (root / "a").mkdir()
    (root / "a" / "out").symlink_to(outside)
    await file_store.put("a/real", b"real")
    (root / "a" / "in").symlink_to(root / "a" / "real")
    for key in ("a/out", "a/in"):
        with pytest.raises(PathOutsideRoot):
            await file_store.read(key)
        with pytest.raises(PathOutsideRoot):
            await file_store.put(key, b"x")
    assert outside.read_bytes() == b"outside"
    assert [info.key for info in await file_store.list()] == ["a/real"]


async def test_files_no_temporary_file_survives_a_failed_put(file_store: ObjectStore, tmp_path: Path) -> None:
    await file_store.put("d/k", b"old")
    with pytest.raises(ChecksumMismatch):
        await file_store.put("d/k", b"new", expected_sha256=sha(b"other"))
    with pytest.raises(PayloadTooLarge):
        await file_store.put("d/k", stream(b"123", b"456"), max_size=4)
    leftovers = [p for p in (tmp_path / "root").rglob("*") if "nsfl-tmp" in p.name]
    assert leftovers == []


# -- s3 only ------------------------------------------------------------------------------------


async def test_s3_a_stopped_server_is_unavailable_within_a_deadline(
    s3_outage_server: RunningMotoServer,
) -> None:
    endpoint = s3_outage_server.endpoint
    store = open_object_store(
        f"s3://outage-bucket?endpoint={endpoint.url}&create_bucket=true",
        access_key=endpoint.access_key,
        secret_key=endpoint.secret_key,
    )
    try:
        await store.put("k", b"before the outage")
        s3_outage_server.stop()
        async with asyncio.timeout(15):
            for call in (
                lambda: store.put("k", b"during"),
                lambda: store.stat("k"),
                lambda: store.read("k"),
                lambda: store.list(),
            ):
                with pytest.raises(Unavailable) as caught:
                    await call()
                assert endpoint.secret_key not in str(caught.value)
                assert endpoint.access_key not in str(caught.value)
    finally:
        await store.close()


async def test_s3_a_missing_bucket_is_created_only_when_allowed(s3_server: S3Endpoint) -> None:
    credentials = {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    bucket = f"nsfl-created-{os.getpid()}-{os.urandom(3).hex()}"
    strict = open_object_store(f"s3://{bucket}?endpoint={s3_server.url}", **credentials)
    with pytest.raises(NotFound):
        await strict.put("k", b"x")
    await strict.close()
    creating = open_object_store(f"s3://{bucket}?endpoint={s3_server.url}&create_bucket=true", **credentials)
    try:
        await creating.put("k", b"x")
        assert s3_server.client().bucket_exists(bucket)
        assert await creating.delete_prefix("k") == 1
    finally:
        await creating.close()
        s3_server.client().remove_bucket(bucket)


async def test_s3_objects_written_by_other_tools_are_listed_without_a_checksum(
    s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client = s3_server.client()
    client.put_object(s3_bucket, "base/foreign", io.BytesIO(b"foreign"), 7)
    client.put_object(s3_bucket, "base/bad//name", io.BytesIO(b"x"), 1)
    client.put_object(s3_bucket, "elsewhere", io.BytesIO(b"x"), 1)
    store = open_object_store(
        f"s3://{s3_bucket}/base?endpoint={s3_server.url}",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    try:
        await store.put("ours", b"ours")
        assert await store.list() == [
            ObjectInfo(key="foreign", size=7, sha256=""),
            ObjectInfo(key="ours", size=4, sha256=sha(b"ours")),
        ]
        assert await store.read("foreign") == b"foreign"
        assert client.stat_object(s3_bucket, "base/ours").size == 4
    finally:
        await store.close()


async def test_s3_content_that_does_not_match_its_checksum_metadata_fails_verification(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    s3_server.client().put_object(
        s3_bucket, "k", io.BytesIO(b"corrupted"), 9, metadata={"sha256": sha(b"original!")}
    )
    store = open_object_store(
        f"s3://{s3_bucket}?endpoint={s3_server.url}",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    try:
        assert (await store.stat("k")).sha256 == sha(b"original!")
        with pytest.raises(ChecksumMismatch):
            await store.read("k")
        with pytest.raises(ChecksumMismatch):
            await store.get_file("k", tmp_path / "copy")
        assert names_in(tmp_path) == []
        assert b"".join(await collect(store, "k", offset=1)) == b"orrupted"  # ranges cannot be verified
    finally:
        await store.close()
