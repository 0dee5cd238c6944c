"""Per-round platform overhead of a real federated job on loopback.

``python bench/round_overhead.py [--rounds 10] [--mode script|function|both]``

Starts a client selector, three task managers (warm workers, one share of
scikit-learn's digits each) and a coordinator as separate processes, runs the
digits job (MLP 64-128-10, one epoch of SGD per round, evaluation only at the
end so a round is one training exchange), then prints per mode:

* median wall time of a round (offers sent to aggregate applied),
* median time the clients spent inside the user's code (per round, the
  slowest accepted client: the round waits for it),
* their difference: the platform's overhead per round.

Machine load matters on 2 cores: the load average is printed beside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.pytorch_digits.data import write_splits
from tests.e2e.conftest import client_config, digits_job
from tests.e2e.harness import Cluster, read_status, wait_for


def run(mode: str, rounds: int, base: Path) -> dict[str, Any]:
    cluster = Cluster(base)
    try:
        shares = write_splits(base / "data", clients=3, split="iid", seed=0)
        selector = cluster.start_selector()
        for index, share in enumerate(shares.values()):
            name = f"client-{index}"
            cluster.start_task_manager(name, client_config(name, share, selector, base / name))
        entry = "digits-pytorch" if mode == "script" else "digits-pytorch-function"
        job = digits_job(f"bench-{mode}", taskEntry=entry, rounds=rounds, evaluateEvery=0, checkpointEvery=0,
                         roundTimeoutSeconds=120)
        workdir = base / "coordinator"
        proc = cluster.start_coordinator("coordinator", job, selector=selector, workdir=workdir,
                                         state=base / "state")
        wait_for("the job to end", lambda: not proc.alive(), 900, cluster.procs)
        status = read_status(workdir)
        if status.get("state") != "FINISHED":
            raise SystemExit(f"job ended {status.get('state')}: {status.get('reason')}\n{cluster.logs()}")
        return status
    finally:
        cluster.teardown()


def summarise(status: dict[str, Any]) -> dict[str, float]:
    walls, scripts = [], []
    for record in status["history"]:
        walls.append(record["endedAt"] - record["startedAt"])
        seconds = [s for s in record.get("clientSeconds", {}).values() if s is not None]
        scripts.append(max(seconds) if seconds else float("nan"))
    overheads = [w - s for w, s in zip(walls, scripts, strict=True)]
    final = status["history"][-1].get("evaluation", {})
    return {"round": statistics.median(walls), "script": statistics.median(scripts),
            "overhead": statistics.median(overheads), "accuracy": final.get("accuracy", float("nan"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--mode", choices=["script", "function", "both"], default="both")
    args = parser.parse_args()
    modes = ["script", "function"] if args.mode == "both" else [args.mode]
    print(f"digits job, 3 clients, {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    print(f"{'mode':9} {'round (median)':>15} {'in user code':>13} {'overhead':>10} {'final acc':>10}")
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix=f"nsfl-bench-{mode}-") as tmp:
            figures = summarise(run(mode, args.rounds, Path(tmp)))
        print(f"{mode:9} {figures['round'] * 1000:13.0f}ms {figures['script'] * 1000:11.0f}ms "
              f"{figures['overhead'] * 1000:8.0f}ms {figures['accuracy']:10.3f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
