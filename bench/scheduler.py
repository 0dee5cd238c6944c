"""Scheduler latency and REST throughput on a real standalone control plane.

``python bench/scheduler.py [--jobs 50] [--seconds 5] [--concurrency 8]``

Starts the standalone control plane (selector, job scheduler on the local
platform, API server) and three real task managers with digits shares, then:

1. submits ``--jobs`` one-round digits jobs through REST as fast as it can
   and prints submit-to-RUNNING latency (median, p95) from each job's
   persisted transitions (RUNNING is entered when the job's coordinator
   process runs its first round, so this includes admission, the
   coordinator's process start and its first client selection; jobs beyond
   the scheduler's concurrency limits wait in QUEUED, which is part of it);
2. hammers ``GET /api/v1/namespaces/default/jobs`` with ``--concurrency``
   keep-alive clients for ``--seconds`` and prints requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.pytorch_digits.data import write_splits
from nsfl_ctl import standalone
from nsfl_ctl.control_plane_plan import Ports
from tests.e2e.conftest import client_config, digits_job
from tests.e2e.harness import Cluster, wait_for
from tests.fixtures.pki import TestPki


def _transition_time(job: dict[str, Any], state: str) -> float | None:
    for transition in job.get("transitions", []):
        if transition.get("to") == state:
            return float(transition["at"])
    return None


async def submit_all(api: str, token: str, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"}
    names = [f"bench-{i:03d}" for i in range(count)]
    async with aiohttp.ClientSession(headers=headers) as session:
        for name in names:
            spec = digits_job(name, rounds=1, evaluateEvery=0, checkpointEvery=0)
            async with session.post(f"{api}/api/v1/namespaces/default/jobs", json=spec) as response:
                if response.status != 201:
                    raise SystemExit(f"submit failed: {response.status} {await response.text()}")
    return names


async def fetch_jobs(api: str, token: str, names: list[str]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        jobs = []
        for name in names:
            async with session.get(f"{api}/api/v1/namespaces/default/jobs/{name}") as response:
                jobs.append(await response.json())
        return jobs


async def hammer(api: str, token: str, seconds: float, concurrency: int) -> tuple[int, int]:
    url = f"{api}/api/v1/namespaces/default/jobs?limit=50"
    done = errors = 0
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        while time.monotonic() < deadline:
            async with session.get(url) as response:
                await response.read()
                done += 1
                errors += response.status != 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": f"Bearer {token}"}) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nsfl-bench-scheduler-") as tmp:
        base = Path(tmp)
        plane = standalone.up(base / "state", ports=Ports(api=0, selector=0, scheduler=0), timeout=120)
        cluster = Cluster(base, TestPki.existing(base / "state" / "pki"))  # the plane's own CA
        try:
            shares = write_splits(base / "data", clients=3, split="iid", seed=0)
            for index, share in enumerate(shares.values()):
                name = f"client-{index}"
                cluster.start_task_manager(name, client_config(name, share, plane.selector_address, base / name))
            time.sleep(1.0)
            print(f"load average at start: {os.getloadavg()[0]:.2f}")
            names = asyncio.run(submit_all(plane.api_url, plane.token, args.jobs))

            def all_ended() -> bool:
                jobs = asyncio.run(fetch_jobs(plane.api_url, plane.token, names))
                return all(j["state"] in ("FINISHED", "FAILED") for j in jobs)

            wait_for("every job to end", all_ended, 1800, cluster.procs, interval=2.0)
            jobs = asyncio.run(fetch_jobs(plane.api_url, plane.token, names))
            latencies = []
            for job in jobs:
                running = _transition_time(job, "RUNNING")
                if running is not None:
                    latencies.append(running - float(job["createdAt"]))
            latencies.sort()
            finished = sum(j["state"] == "FINISHED" for j in jobs)
            p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)] if latencies else float("nan")
            print(f"{args.jobs} one-round jobs on the local platform ({finished} FINISHED)")
            print(f"  submit-to-RUNNING median {statistics.median(latencies):.2f}s  p95 {p95:.2f}s"
                  f"  (max {latencies[-1]:.2f}s)")
            done, errors = asyncio.run(hammer(plane.api_url, plane.token, args.seconds, args.concurrency))
            print(f"  GET /api/v1/namespaces/default/jobs: {done / args.seconds:.0f} requests/s "
                  f"({args.concurrency} clients, {errors} errors, {len(names)} jobs stored)")
            print(f"load average at end: {os.getloadavg()[0]:.2f}")
        finally:
            cluster.teardown()
            standalone.down(base / "state")


if __name__ == "__main__":
    main()
