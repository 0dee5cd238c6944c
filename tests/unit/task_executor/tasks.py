"""Helpers that lay out a task directory the way a task manager does (docs/contracts.md)."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from libs.weights.tensors import WeightMap


def linear_weights(seed: int = 0) -> WeightMap:
    """Weights of ``torch.nn.Linear(4, 2)``, as a coordinator would publish them."""
    rng = np.random.default_rng(seed)
    return {
        "bias": rng.standard_normal(2).astype(np.float32),
        "weight": rng.standard_normal((2, 4)).astype(np.float32),
    }


def write_script(directory: Path, source: str, name: str = "train.py") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def task_json(
    *,
    script: Path,
    endpoint: str,
    kind: str = "train",
    model_sha256: str = "",
    mode: str = "script",
    runtime: str = "pytorch",
    **overrides: Any,
) -> dict[str, Any]:
    task: dict[str, Any] = {
        "task_id": f"ns/job:3:{kind}:c1:0",
        "job_id": "ns/job",
        "namespace": "ns",
        "round": 3,
        "attempt": 0,
        "kind": kind,
        "runtime": runtime,
        "client_id": "c1",
        "coordinator_endpoint": endpoint,
        "model_sha256": model_sha256,
        "task_token": "token-abc",
        "entry": {"script": str(script), "mode": mode, "working_dir": str(script.parent)},
        "parameters": {"epochs": 1},
        "datasets": {"digits": str(script.parent / "data")},
        "dataset_samples": {"digits": 600},
        "timeout_seconds": 60.0,
        "deadline_unix": time.time() + 60.0,
    }
    task.update(overrides)
    return task


def write_task(task_dir: Path, task: dict[str, Any]) -> Path:
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "task.json").write_text(json.dumps(task))
    return task_dir


def read_result(task_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((task_dir / "result.json").read_text())
    return result
