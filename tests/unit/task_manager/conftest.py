"""Fixtures of the task manager's tests: settings in a temporary folder, no leaked processes or tasks.

The stand-in executor entries live in :mod:`tests.unit.task_manager.entries`;
warm workers and cold executors are real processes, so ``PYTHONPATH`` names
the repository root for them to import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from task_manager.settings import TaskManagerSettings, load
from tests.fixtures.pki import TestPki
from tests.unit.task_manager.fakes import ENTRIES, ROOT, FakeCoordinator, running_coordinator

MakeSettings = Callable[..., TaskManagerSettings]


@pytest.fixture(autouse=True)
def executors_import_the_test_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    me = psutil.Process()
    # Session-wide servers of other suites (e.g. the MongoDB-protocol server) are not ours.
    before = {child.pid for child in _live_children(me)}
    yield
    deadline = time.monotonic() + 5.0
    while children := [c for c in _live_children(me) if c.pid not in before]:
        if time.monotonic() > deadline:
            described = [_describe(child) for child in children]
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            pytest.fail(f"the test left processes running: {described}")
        time.sleep(0.05)


def _live_children(me: psutil.Process) -> list[psutil.Process]:
    """Children that still run; a child may turn zombie or vanish while we look."""
    live = []
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                live.append(child)
    return live


def _describe(child: psutil.Process) -> str:
    try:
        return " ".join(child.cmdline())
    except psutil.Error:
        return f"pid {child.pid} (ended while being listed)"


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    yield
    # grpc.aio finishes a cancelled call's bookkeeping in a task of its own: give such tasks a moment.
    deadline = time.monotonic() + 2.0
    while leaked := [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]:
        if time.monotonic() > deadline:
            pytest.fail(f"the test left asyncio tasks running: {leaked}")
        await asyncio.sleep(0.02)


@pytest.fixture
def make_settings(tmp_path: Path, test_pki: TestPki) -> MakeSettings:
    """Settings for a client ``c1`` (with its certificate) with one pytorch entry, one dataset, no preloads
    and test entries."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "train.py").write_text("print('train')\n")
    (tmp_path / "data").mkdir()

    def make(entry: str = "succeed", **overrides: Any) -> TaskManagerSettings:
        values: dict[str, Any] = {
            **{
                key: str(value) for key, value in test_pki.settings(test_pki.identity("client", "c1")).items()
            },
            "client_id": "c1",
            "workspace": str(tmp_path / "ws"),
            "datasets": {"digits": {"path": str(tmp_path / "data"), "samples": 600, "tags": ["iid"]}},
            "task_entries": {"digits-train": {"script": str(scripts / "train.py"), "runtime": "pytorch"}},
            "allowed_script_roots": [str(scripts)],
            "preload": {"pytorch": [], "tensorflow": []},
            "executor_entry": f"{ENTRIES}:{entry}",
            "reconnect_initial_seconds": 0.05,
            "reconnect_max_seconds": 0.2,
            # The stand-in entries record what they see outside their task folder (a shared runs
            # log): confinement is what test_confinement runs with.
            "isolation": "none",
            **overrides,
        }
        return load(env={}, overrides=values)

    return make


@pytest.fixture
async def coordinator(test_pki: TestPki) -> AsyncIterator[FakeCoordinator]:
    async with running_coordinator(test_pki) as fake:
        yield fake
