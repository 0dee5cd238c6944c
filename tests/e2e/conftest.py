"""Fixtures for end-to-end runs: a process cluster, digits shares, client configs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.pytorch_digits.data import write_splits
from tests.e2e.harness import ROOT, Cluster
from tests.fixtures.pki import TestPki


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest, test_pki: TestPki) -> Iterator[Cluster]:
    made = Cluster(tmp_path, test_pki)
    yield made
    made.teardown()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(made.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def digits_shares(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("digits")
    return write_splits(out, clients=3, split="iid", seed=0)


def client_config(name: str, share: dict[str, Any], selector: str, workspace: Path,
                  runtime: str = "pytorch", **extra: Any) -> dict[str, Any]:
    example = "pytorch_digits" if runtime == "pytorch" else "keras_digits"
    root = ROOT / "examples" / example
    entry = "digits-pytorch" if runtime == "pytorch" else "digits-keras"
    return {
        "client_id": name,
        "selector_address": selector,
        "workspace": str(workspace),
        "datasets": {"digits": {"path": share["path"], "samples": share["train"], "tags": ["digits"]}},
        "task_entries": {
            entry: {"script": str(root / "train.py"), "runtime": runtime, "mode": "script"},
            f"{entry}-function": {"script": str(root / "function.py"), "runtime": runtime, "mode": "function"},
        },
        "allowed_script_roots": [str(ROOT / "examples")],
        "max_parallel_tasks": 2,
        "task_timeout_seconds": 120,
        **extra,
    }


def digits_job(name: str = "digits", runtime: str = "pytorch", **changes: Any) -> dict[str, Any]:
    entry = "digits-pytorch" if runtime == "pytorch" else "digits-keras"
    return {
        "name": name, "namespace": "default", "runtime": runtime, "taskEntry": entry,
        "datasets": ["digits"], "parameters": {"epochs": 1, "lr": 0.1, "batch_size": 16},
        "rounds": 5, "clientsPerRound": 3, "minClients": 2, "evaluateEvery": 1,
        "roundTimeoutSeconds": 60, **changes,
    }
