"""Secure aggregation on real processes: a selector, three task managers and a coordinator train digits.

The same job (same name, so the same seeds and the same initial model) runs
once with plain uploads and once with double-mask secure aggregation; the
coordinator of the second sees only masked vectors and the unmasked sum,
and its final accuracy must match the first's within 0.02.  A second test
kills one executor right after it shared its keys; the round must still
unmask the sum of the other two and the job must finish.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from libs.objects import open_object_store
from libs.weights.tensors import encode
from tests.e2e.conftest import client_config, digits_job
from tests.e2e.harness import ROOT, Cluster, Proc, read_status, wait_for

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "e2e" / "scripts" / "secagg_train.py"  # seeded per task; a dropout switch
SECURE = {"secureAggregation": {"mode": "double-mask", "threshold": 2, "bits": 32}}


def start_clients(cluster: Cluster, shares: dict[str, dict[str, Any]], selector: str,
                  label: str = "") -> list[Proc]:
    procs = []
    for index, share in enumerate(shares.values()):
        name = f"client-{index}"
        config = client_config(name, share, selector, cluster.base / f"{label}{name}")
        config["task_entries"]["secagg-train"] = {"script": str(SCRIPT), "runtime": "pytorch", "mode": "script"}
        config["allowed_script_roots"].append(str(SCRIPT.parent))
        procs.append(cluster.start_task_manager(f"{label}{name}", config))
    return procs


def initial_model(state: Path) -> str:
    """The digits model with torch's seed 0, stored where the job's ``modelPath`` finds it."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    async def put() -> None:
        store = open_object_store(f"file://{state / 'objects'}")
        await store.put("default/models/init/1/model.safetensors", encode(weights))
        await store.close()

    (state / "objects").mkdir(parents=True, exist_ok=True)
    asyncio.run(put())
    return "models/init/1/model.safetensors"


def run_job(cluster: Cluster, job: dict[str, Any], selector: str, label: str) -> dict[str, Any]:
    workdir = cluster.base / label
    proc = cluster.start_coordinator(f"coordinator-{label}", job, selector=selector, workdir=workdir,
                                     state=cluster.base / f"{label}-state")
    wait_for(f"the {label} job to end", lambda: not proc.alive(), 150, cluster.procs)
    status = read_status(workdir)
    assert status.get("state") == "FINISHED", f"{status.get('state')}: {status.get('reason')}\n{cluster.logs()}"
    return status


def final_accuracy(status: dict[str, Any]) -> float:
    return float(status["history"][-1]["evaluation"]["accuracy"])


def test_double_mask_secure_aggregation_trains_digits_as_well_as_plain_fedavg(
        cluster: Cluster, digits_shares: Any) -> None:
    selector = cluster.start_selector()
    model_path = initial_model(cluster.base / "plain-state")
    initial_model(cluster.base / "secure-state")
    job = digits_job(rounds=3, evaluateEvery=0, roundTimeoutSeconds=90, modelPath=model_path,
                     taskEntry="secagg-train")
    # Fresh task managers for each run: the second job has the first's id (hence its seeds) and
    # must not meet executors the first one left behind.
    first = start_clients(cluster, digits_shares, selector, "plain-")
    plain = run_job(cluster, job, selector, "plain")
    for proc in first:
        proc.stop()
    start_clients(cluster, digits_shares, selector, "secure-")
    secure = run_job(cluster, {**job, "privacy": SECURE}, selector, "secure")

    for record in secure["history"]:
        summary = record["secureAggregation"]
        assert summary["mode"] == "double-mask" and summary["participants"] == 3 and summary["inputs"] == 3
        assert sorted(record["accepted"]) == ["client-0", "client-1", "client-2"]
        # the decoded Σ w_i is the plain run's sample count: the weights were masked, not lost
        assert record["samples"] == pytest.approx(plain["history"][0]["samples"], abs=0.01)
    assert "secureAggregation" not in plain["history"][0]
    accuracy, secure_accuracy = final_accuracy(plain), final_accuracy(secure)
    print(f"final accuracy: plain {accuracy:.4f}, double-mask secure aggregation {secure_accuracy:.4f}")
    assert accuracy >= 0.85
    assert abs(secure_accuracy - accuracy) <= 0.02, (accuracy, secure_accuracy)


def test_a_client_killed_after_sharing_is_unmasked_out_and_the_job_finishes(
        cluster: Cluster, digits_shares: Any) -> None:
    selector = cluster.start_selector()
    start_clients(cluster, digits_shares, selector)
    job = digits_job(rounds=3, evaluateEvery=0, roundTimeoutSeconds=90, taskEntry="secagg-train",
                     privacy=SECURE)
    job["parameters"] = {**job["parameters"], "drop_client": "client-2", "drop_round": 2}
    status = run_job(cluster, job, selector, "dropout")

    round2 = status["history"][1]
    assert round2["secureAggregation"]["shared"] == 3, round2  # client-2 shared its keys ...
    assert round2["secureAggregation"]["dropped"] == ["client-2"], round2  # ... then never sent its input
    assert sorted(round2["accepted"]) == ["client-0", "client-1"] and "client-2" in round2["dropped"]
    assert round2["endedAt"] - round2["startedAt"] < 60  # the broken stream dropped it; no deadline waited out
    logs = list((cluster.base / "client-2" / "tasks").glob("*/*/executor.log"))
    assert any("kills itself (test-only dropout)" in log.read_text() for log in logs) or logs == []
    assert [len(r["accepted"]) for r in status["history"]] == [3, 2, 3]
    assert final_accuracy(status) >= 0.85
    assert status["round"] == 3 and Path(status["final_model"]["key"]).name == "model.safetensors"
