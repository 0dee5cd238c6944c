"""The file backend's own promises: checksum sidecars, confinement details, atomicity under cancellation."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.errors import ChecksumMismatch, InvalidKey, NotFound
from libs.objects import FileObjectStore, ObjectInfo


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> FileObjectStore:
    return FileObjectStore(tmp_path / "root")


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    (tmp_path / "downloads").mkdir()
    return tmp_path / "downloads"


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def rot_in_place(path: Path) -> None:
    """Change bytes but keep inode, size and mtime, so the checksum sidecar still vouches for the file."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.write(b"BAD")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


async def test_an_object_is_a_plain_file_and_its_checksum_a_hidden_sidecar(store: FileObjectStore) -> None:
    await store.put("ns/models/m/1/model.safetensors", b"weights")
    assert (store.root / "ns/models/m/1/model.safetensors").read_bytes() == b"weights"
    assert files_under(store.root) == [
        ".nsfl-meta/ns/models/m/1/model.safetensors",
        "ns/models/m/1/model.safetensors",
    ]


async def test_a_file_changed_outside_the_store_gets_its_checksum_recomputed(store: FileObjectStore) -> None:
    await store.put("k", b"original")
    (store.root / "k").write_bytes(b"edited by hand, longer")
    info = await store.stat("k")
    assert info == ObjectInfo(key="k", size=22, sha256=sha(b"edited by hand, longer"))
    assert await store.read("k") == b"edited by hand, longer"


async def test_a_file_copied_in_by_hand_is_listed_with_its_checksum(store: FileObjectStore) -> None:
    (store.root / "copied").mkdir()
    (store.root / "copied" / "in").write_bytes(b"manual")
    assert await store.list() == [ObjectInfo(key="copied/in", size=6, sha256=sha(b"manual"))]
    assert (store.root / ".nsfl-meta" / "copied" / "in").is_file()  # repaired for next time


async def test_content_that_rots_under_a_valid_sidecar_fails_verification(
    store: FileObjectStore, downloads: Path
) -> None:
    await store.put("k", b"good data")
    rot_in_place(store.root / "k")
    with pytest.raises(ChecksumMismatch):
        await store.read("k")
    with pytest.raises(ChecksumMismatch):
        await store.get_file("k", downloads / "copy")
    assert files_under(downloads) == []


async def test_a_key_cannot_be_both_an_object_and_a_prefix(store: FileObjectStore) -> None:
    await store.put("a", b"file")
    with pytest.raises(InvalidKey):
        await store.put("a/b", b"below a file")
    await store.put("x/y", b"below a directory")
    with pytest.raises(InvalidKey):
        await store.put("x", b"over a directory")
    with pytest.raises(NotFound):
        await store.stat("x")
    assert await store.read("a") == b"file"
    assert [info.key for info in await store.list()] == ["a", "x/y"]


async def test_a_fifo_at_a_key_is_not_an_object_and_does_not_block(store: FileObjectStore) -> None:
    os.mkfifo(store.root / "fifo")
    async with asyncio.timeout(5):
        with pytest.raises(NotFound):
            await store.read("fifo")
        assert await store.list() == []


async def test_list_shows_no_temporary_meta_or_unaddressable_files(store: FileObjectStore) -> None:
    await store.put("d/real", b"r")
    (store.root / "d" / ".nsfl-tmp-0123456789abcdef").write_bytes(b"left by a crash")
    (store.root / "d" / "back\\slash").write_bytes(b"not a valid key")
    (store.root / "d" / "link").symlink_to(store.root / "d" / "real")
    assert [info.key for info in await store.list()] == ["d/real"]
    assert [info.key for info in await store.list("d/")] == ["d/real"]


async def test_deleting_the_last_object_of_a_directory_removes_the_empty_directories(
    store: FileObjectStore,
) -> None:
    await store.put("ns/jobs/j1/rounds/000001/delta", b"d")
    await store.put("ns/keep", b"k")
    assert await store.delete_prefix("ns/jobs/") == 1
    assert sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*")) == [
        ".nsfl-meta",
        ".nsfl-meta/ns",
        ".nsfl-meta/ns/keep",
        "ns",
        "ns/keep",
    ]


async def test_a_cancelled_put_leaves_the_previous_object_and_no_temporary_file(
    store: FileObjectStore,
) -> None:
    await store.put("k", b"previous")
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first part"
        started.set()
        await asyncio.sleep(60)
        yield b"never"

    task = asyncio.create_task(store.put("k", slow()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.read("k") == b"previous"
    assert [name for name in files_under(store.root) if "nsfl-tmp" in name] == []


async def test_concurrent_puts_to_one_key_leave_one_whole_object_with_its_checksum(
    store: FileObjectStore,
) -> None:
    payloads = [bytes([i]) * (200_000 + i) for i in range(8)]
    await asyncio.gather(*(store.put("k", payload) for payload in payloads))
    content = await store.read("k")
    assert content in payloads
    assert await store.stat("k") == ObjectInfo(key="k", size=len(content), sha256=sha(content))
    assert [name for name in files_under(store.root) if "nsfl-tmp" in name] == []


async def test_the_root_may_itself_be_reached_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real-root").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real-root", target_is_directory=True)
    store = FileObjectStore(tmp_path / "alias")
    await store.put("k", b"v")
    assert (tmp_path / "real-root" / "k").read_bytes() == b"v"


async def test_no_descriptor_is_leaked_on_success_or_failure(store: FileObjectStore, tmp_path: Path) -> None:
    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    await store.put("warm/up", b"x")  # let the thread pool start its workers first
    before = open_descriptors()
    for _ in range(3):
        await store.put("d/k", b"data")
        await store.read("d/k")
        await store.list()
        with pytest.raises(ChecksumMismatch):
            await store.put("d/k", b"x", expected_sha256=sha(b"y"))
        with pytest.raises(NotFound):
            await store.read("d")  # a directory
        with pytest.raises(InvalidKey):
            await store.put("d/k/deeper", b"x")
        (store.root / ".nsfl-meta" / "d" / "k").unlink()
        (store.root / ".nsfl-meta" / "d" / "k").mkdir()  # a damaged meta tree
        assert (await store.stat("d/k")).sha256 == sha(b"data")
        (store.root / ".nsfl-meta" / "d" / "k").rmdir()
        assert await store.delete("d/k")
    assert open_descriptors() == before
