"""Long-lived job executors on real processes: one process per (job, client) across rounds, replaced
when it crashes, gone when the job ends, never shared between jobs, and flat in memory."""

from __future__ import annotations

import json
import os
import signal
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import client_config, digits_job
from tests.e2e.harness import ROOT, Cluster, Proc, read_status, wait_for

pytestmark = pytest.mark.slow

SCRIPTS = ROOT / "tests" / "e2e" / "scripts"
PROBES = {"script": SCRIPTS / "probe_train.py", "function": SCRIPTS / "probe_function.py"}


def probed_clients(cluster: Cluster, shares: dict[str, dict[str, Any]], selector: str) -> list[Proc]:
    procs = []
    for index, share in enumerate(shares.values()):
        name = f"client-{index}"
        config = client_config(name, share, selector, cluster.base / name)
        for mode, script in PROBES.items():
            config["task_entries"][f"probe-{mode}"] = {"script": str(script), "runtime": "pytorch", "mode": mode}
        config["allowed_script_roots"].append(str(SCRIPTS))
        # The probes record each executor's pid in a folder the test shares with every client,
        # outside any task folder: a confined executor may not write there (test_confinement).
        config["isolation"] = "none"
        procs.append(cluster.start_task_manager(name, config))
    return procs


def probe_job(name: str, pid_dir: Path, mode: str = "script", **changes: Any) -> dict[str, Any]:
    job = digits_job(name, taskEntry=f"probe-{mode}", **changes)
    job["parameters"] = {**job["parameters"], "pid_dir": str(pid_dir)}
    return job


def start_job(cluster: Cluster, job: dict[str, Any], selector: str, label: str = "coordinator") -> Proc:
    return cluster.start_coordinator(label, job, selector=selector, workdir=cluster.base / label,
                                     state=cluster.base / f"state-{label}")


def finished(cluster: Cluster, proc: Proc, label: str, timeout: float) -> dict[str, Any]:
    wait_for(f"{label} to end", lambda: not proc.alive(), timeout, cluster.procs)
    status = read_status(cluster.base / label)
    assert status.get("state") == "FINISHED", f"{status.get('reason')}\n{cluster.logs()}"
    return status


def probes(pid_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Per client, what its probe recorded, in order."""
    return {path.stem: [json.loads(line) for line in path.read_text().splitlines()]
            for path in sorted(pid_dir.glob("*.jsonl"))}


def executor_processes(task_managers: list[Proc]) -> list[int]:
    found = []
    for manager in task_managers:
        try:
            children = psutil.Process(manager.popen.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for child in children:
            try:
                if child.name() == "nsfl-job-exec" and child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child.pid)
            except psutil.NoSuchProcess:
                continue
    return found


def test_a_client_serves_a_job_from_one_process_and_a_crashed_one_is_replaced(
        cluster: Cluster, digits_shares: Any) -> None:
    selector = cluster.start_selector()
    probed_clients(cluster, digits_shares, selector)
    pid_dir = cluster.base / "pids"
    job = probe_job("crash", pid_dir, rounds=4, roundTimeoutSeconds=90)
    job["parameters"].update(stall_client="client-2", stall_round=2)
    proc = start_job(cluster, job, selector)
    wait_for("client-2 to stall in round 2", (pid_dir / "client-2.pid").exists, 150, cluster.procs)
    crashed = int((pid_dir / "client-2.pid").read_text())
    os.kill(crashed, signal.SIGKILL)
    status = finished(cluster, proc, "coordinator", 180)

    history = {record["round"]: record for record in status["history"]}
    assert sorted(history[2]["accepted"]) == ["client-0", "client-1"]
    assert "SIGKILL" in history[2]["dropped"]["client-2"], history[2]
    assert history[2]["endedAt"] - history[2]["startedAt"] < 60, "dropped at once, not at the deadline"
    assert "client-2" in history[3]["accepted"] and "client-2" in history[4]["accepted"]
    seen = probes(pid_dir)
    for client in ("client-0", "client-1"):
        assert len({r["pid"] for r in seen[client]}) == 1, f"{client} ran the job in one process: {seen[client]}"
    before = {r["pid"] for r in seen["client-2"] if r["round"] <= 2}
    after = {r["pid"] for r in seen["client-2"] if r["round"] >= 3}
    assert before == {crashed} and len(after) == 1 and crashed not in after, seen["client-2"]


def test_a_stopped_job_leaves_no_executor_process_behind(cluster: Cluster, digits_shares: Any) -> None:
    selector = cluster.start_selector()
    managers = probed_clients(cluster, digits_shares, selector)
    pid_dir = cluster.base / "pids"
    proc = start_job(cluster, probe_job("stopped", pid_dir, rounds=500, evaluateEvery=0), selector)
    wait_for("round 3", lambda: read_status(cluster.base / "coordinator").get("round", 0) >= 3, 180,
             cluster.procs)
    assert len(executor_processes(managers)) == 3
    assert proc.stop(signal.SIGTERM, timeout=60) == 3
    assert read_status(cluster.base / "coordinator")["state"] == "STOPPED"

    wait_for("the job executors to end", lambda: not executor_processes(managers), 15, cluster.procs)
    used = {r["pid"] for records in probes(pid_dir).values() for r in records}
    assert used and not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                            for pid in used)
    assert all(manager.alive() for manager in managers), "the task managers themselves go on"


def test_two_jobs_on_the_same_clients_never_share_an_executor(cluster: Cluster, digits_shares: Any) -> None:
    selector = cluster.start_selector()
    probed_clients(cluster, digits_shares, selector)
    pid_dir = cluster.base / "pids"
    first = start_job(cluster, probe_job("first", pid_dir, rounds=4), selector, "coordinator-a")
    second = start_job(cluster, probe_job("second", pid_dir, mode="function", rounds=4), selector,
                       "coordinator-b")
    finished(cluster, first, "coordinator-a", 240)
    finished(cluster, second, "coordinator-b", 240)

    for client, records in probes(pid_dir).items():
        by_job: dict[str, set[int]] = defaultdict(set)
        for record in records:
            by_job[record["job"]].add(record["pid"])
        assert set(by_job) == {"default/first", "default/second"}, client
        assert len(by_job["default/first"]) == 1 and len(by_job["default/second"]) == 1, by_job
        assert not by_job["default/first"] & by_job["default/second"], f"{client} shared a process: {by_job}"


@pytest.mark.parametrize("mode", ["script", "function"])
def test_a_long_lived_executor_stays_flat_in_memory_over_200_rounds(
        cluster: Cluster, digits_shares: Any, mode: str) -> None:
    selector = cluster.start_selector()
    probed_clients(cluster, digits_shares, selector)
    pid_dir = cluster.base / "pids"
    job = probe_job("flat", pid_dir, mode=mode, rounds=200, checkpointEvery=0, roundTimeoutSeconds=60)
    proc = start_job(cluster, job, selector)
    status = finished(cluster, proc, "coordinator", 900)
    assert status["round"] == 200

    for client, records in probes(pid_dir).items():
        trained = [r for r in records if r["kind"] == "train"]
        assert len({r["pid"] for r in trained}) == 1, f"{client} changed process"
        early = statistics.median(r["rss"] for r in trained if 21 <= r["round"] <= 40)
        late = statistics.median(r["rss"] for r in trained if 181 <= r["round"] <= 200)
        growth = (late - early) / 2**20
        print(f"{client} ({mode}): resident {early / 2**20:.1f} MiB at rounds 21-40, "
              f"{late / 2**20:.1f} MiB at rounds 181-200")
        assert growth < 8, f"{client} grew {growth:.1f} MiB over 160 rounds"
