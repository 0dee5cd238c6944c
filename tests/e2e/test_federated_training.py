"""Real processes on loopback: a selector, three task managers and a coordinator train digits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import client_config, digits_job
from tests.e2e.harness import Cluster, iter_evaluations, read_status, wait_for

pytestmark = pytest.mark.slow


def start_clients(cluster: Cluster, shares: dict[str, dict[str, Any]], selector: str,
                  runtime: str = "pytorch") -> list[str]:
    names = []
    for index, share in enumerate(shares.values()):
        name = f"client-{index}"
        cluster.start_task_manager(name, client_config(name, share, selector, cluster.base / name, runtime))
        names.append(name)
    return names


def run_job(cluster: Cluster, job: dict[str, Any], selector: str, timeout: float) -> dict[str, Any]:
    workdir = cluster.base / "coordinator"
    proc = cluster.start_coordinator("coordinator", job, selector=selector, workdir=workdir,
                                     state=cluster.base / "state")
    wait_for("the coordinator to end", lambda: not proc.alive(), timeout, cluster.procs)
    status = read_status(workdir)
    assert status.get("state") == "FINISHED", f"{status.get('state')}: {status.get('reason')}\n{cluster.logs()}"
    assert proc.popen.returncode == 0
    return status


def test_pytorch_digits_trains_across_three_processes_to_090(cluster: Cluster, digits_shares: Any) -> None:
    selector = cluster.start_selector()
    start_clients(cluster, digits_shares, selector)
    status = run_job(cluster, digits_job(rounds=5), selector, timeout=240)
    evaluations = dict(iter_evaluations(status))
    assert sorted(evaluations) == [1, 2, 3, 4, 5]
    # One unseeded epoch of SGD (lr 0.1) per round moves the last evaluation by a few points either way
    # (28 runs of this test: 0.896-0.965 at round 5): the job must reach 0.90 and end near it.
    assert max(evaluations[4]["accuracy"], evaluations[5]["accuracy"]) >= 0.90, evaluations
    assert evaluations[5]["accuracy"] >= 0.88, evaluations
    assert evaluations[5]["accuracy"] > evaluations[1]["accuracy"], evaluations
    assert status["round"] == 5 and status["final_model"]["size"] > 0
    assert all(len(record["accepted"]) >= 2 for record in status["history"])


def test_keras_digits_trains_across_three_processes(cluster: Cluster, digits_shares: Any) -> None:
    selector = cluster.start_selector()
    start_clients(cluster, digits_shares, selector, runtime="tensorflow")
    status = run_job(cluster, digits_job("keras", runtime="tensorflow", rounds=3), selector, timeout=300)
    evaluations = dict(iter_evaluations(status))
    assert evaluations[3]["accuracy"] >= 0.90, evaluations
    assert evaluations[3]["accuracy"] >= evaluations[1]["accuracy"], evaluations


def coordinator_workdir(cluster: Cluster) -> Path:
    return cluster.base / "coordinator"
