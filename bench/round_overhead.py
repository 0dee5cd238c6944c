"""Per-round platform overhead and job start latency of a real federated job on loopback.

``python bench/round_overhead.py [--rounds 20] [--mode script|function|both] [--wire mtls|plaintext|both]
[--checkpoint-every N] [--keep DIR]``

``--wire both`` runs the whole measurement twice, one plane after the other:
with loopback plaintext (every component told ``insecure``) and with mutual
TLS (the default path), so the cost of the secure wire reads off one table.

Starts a standalone control plane as separate processes (client selector, job
scheduler with the local platform, API server: ``nsfl_ctl.standalone.up``)
and three task managers (warm workers, long-lived job executors, one IID
share of scikit-learn's digits each), waits until the three are registered
and their warm workers have imported torch, then per mode submits the digits
job over REST (MLP 64-128-10, one epoch of SGD per round, 3 clients per
round, evaluation every round, the job's defaults otherwise, a checkpoint
every round among them; ``--checkpoint-every 0`` for none) and prints:

* median round time: from one round's start to the next one's (so it holds
  everything between two rounds: aggregation, evaluation, checkpoint,
  progress reports); the last round is measured to its end;
* median client time: per round, the time the slowest accepted client spent
  in the user's code (training, and evaluating the previous round's model,
  which rides on the training task); the round waits for it;
* median overhead: per round, their difference, the platform's share;
* submit to round 1: from the REST call to the first round's start, with the
  task managers already registered and the scheduler's standby coordinator
  ready, as on a platform that has been up a few seconds (this includes the
  scheduler's admission, the handoff to the coordinator and the ``init`` task
  that builds the model);
* submit to accuracy >= 0.90: from the REST call until the first evaluation
  reaching 0.90 is known (the round it belongs to in brackets).

From round 3 on, each round's tasks are offered while the previous round
runs (coordinator.lookahead), so a round's start only sends its model; rounds
1 and 2 are dispatched the long way (selection, offers through the selector
and the task managers).  The medians cover every round.

The machine's load matters (a 2-core host shared with other work): the load
averages before, during (min-max of the 1-minute figure) and after are
printed beside the figures, and the figures should be read with them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.pytorch_digits.data import write_splits
from nsfl_ctl import standalone
from nsfl_ctl.client import ApiClient
from nsfl_ctl.control_plane_plan import Ports
from tests.e2e.conftest import client_config, digits_job
from tests.e2e.harness import Cluster, read_status, wait_for
from tests.fixtures.pki import TestPki

TARGET_ACCURACY = 0.90


class LoadWatch:
    """The 1-minute load average, sampled every second in a thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(os.getloadavg()[0])

    def describe(self) -> str:
        if not self.samples:
            return "n/a"
        return f"{min(self.samples):.2f}-{max(self.samples):.2f}"


def start_clients(cluster: Cluster, base: Path, selector: str, *, insecure: bool = False) -> list[str]:
    shares = write_splits(base / "data", clients=3, split="iid", seed=0)
    names = []
    for index, share in enumerate(shares.values()):
        name = f"client-{index}"
        extra = {"insecure": True} if insecure else {}
        cluster.start_task_manager(name, client_config(name, share, selector, base / name, **extra))
        names.append(name)
    return names


def wait_until_ready(api: ApiClient, cluster: Cluster, names: list[str], state_dir: Path) -> None:
    """Registered, warm (torch imported), and the scheduler's standby coordinator imported."""

    def registered() -> bool:
        listed = {c["clientId"] for c in api.get("/api/v1/clients").get("clients", [])}
        return set(names) <= listed

    def warm() -> bool:
        return all(
            "warm worker for pytorch is ready" in p.log.read_text(errors="replace")
            for p in cluster.procs
            if p.name in names
        )

    wait_for("the clients to register", registered, 120, cluster.procs)
    wait_for("the warm workers to import torch", warm, 300, cluster.procs)
    wait_for_standby(state_dir, 1, cluster)


def wait_for_standby(state_dir: Path, count: int, cluster: Cluster) -> None:
    """Until the scheduler's ``count``-th standby coordinator has imported and waits for a job.

    The scheduler starts the next standby a few seconds after handing one a job
    (job_scheduler.local_platform); a job submitted before that would start cold.
    """

    def ready() -> bool:
        log = state_dir / "jobs" / ".standby.log"
        return log.exists() and log.read_text(errors="replace").count("waiting for a job") >= count

    wait_for("the standby coordinator", ready, 120, cluster.procs)


def run_job(
    api: ApiClient, state_dir: Path, mode: str, rounds: int, changes: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    name = f"digits-{mode}"
    entry = "digits-pytorch" if mode == "script" else "digits-pytorch-function"
    job = digits_job(
        name, taskEntry=entry, rounds=rounds, evaluateEvery=1, roundTimeoutSeconds=120, **changes
    )
    job.pop("namespace")
    submitted = time.time()
    api.post("/api/v1/namespaces/default/jobs", job)
    workdir = state_dir / "jobs" / "default" / name
    wait_for(
        f"job {name} to end",
        lambda: read_status(workdir).get("state") in ("FINISHED", "FAILED", "STOPPED"),
        900,
    )
    status = read_status(workdir)
    if status.get("state") != "FINISHED":
        raise SystemExit(f"job {name} ended {status.get('state')}: {status.get('reason')}")
    return submitted, status


def summarise(submitted: float, status: dict[str, Any]) -> dict[str, Any]:
    history = sorted(status["history"], key=lambda r: r["round"])
    rounds, clients, overheads = [], [], []
    for record, following in zip(history, [*history[1:], None], strict=True):
        end = following["startedAt"] if following is not None else record["endedAt"]
        seconds = [s for s in record.get("clientSeconds", {}).values() if s is not None]
        if not seconds:
            continue
        rounds.append(end - record["startedAt"])
        clients.append(max(seconds))
        overheads.append(rounds[-1] - clients[-1])
    reached = next(
        (r for r in history if r.get("evaluation", {}).get("accuracy", 0.0) >= TARGET_ACCURACY), None
    )
    accuracy_at = None
    if reached is not None:
        accuracy_at = (reached.get("evaluatedAt") or reached["endedAt"]) - submitted
    return {
        "round": statistics.median(rounds),
        "client": statistics.median(clients),
        "overhead": statistics.median(overheads),
        "first_round": history[0]["startedAt"] - submitted,
        "accuracy_at": accuracy_at,
        "accuracy_round": reached["round"] if reached is not None else None,
        "final": history[-1].get("evaluation", {}).get("accuracy", float("nan")),
    }


def report(mode: str, figures: dict[str, Any], load: LoadWatch) -> None:
    reached = (
        f"{figures['accuracy_at'] * 1000:7.0f} ms (round {figures['accuracy_round']})"
        if figures["accuracy_at"] is not None
        else "not reached"
    )
    print(
        f"{mode:18} {figures['round'] * 1000:8.1f} ms {figures['client'] * 1000:10.1f} ms "
        f"{figures['overhead'] * 1000:9.1f} ms {figures['first_round'] * 1000:9.0f} ms   {reached:24} "
        f"{figures['final']:6.3f}  load {load.describe()}",
        flush=True,
    )


PLAINTEXT_ENV = {f"NSFL_{c}_INSECURE": "true" for c in ("SELECTOR", "SCHEDULER", "API")}


def run_plane(base: Path, wire: str, modes: list[str], rounds: int, changes: dict[str, Any]) -> None:
    """One standalone plane and three clients on ``wire`` ("mtls", the default, or "plaintext"), then the jobs."""
    state_dir = base / "state"
    env = {**os.environ, **PLAINTEXT_ENV} if wire == "plaintext" else None
    plane = standalone.up(state_dir, ports=Ports(api=0, selector=0, scheduler=0), env=env)
    cluster = Cluster(base, TestPki.existing(state_dir / "pki"))  # the plane's own CA
    try:
        api = ApiClient(plane.api_url, plane.token)
        names = start_clients(cluster, base, plane.selector_address, insecure=wire == "plaintext")
        wait_until_ready(api, cluster, names, state_dir)
        for index, mode in enumerate(modes):
            wait_for_standby(state_dir, index + 1, cluster)
            with LoadWatch() as load:
                submitted, status = run_job(api, state_dir, mode, rounds, changes)
            report(f"{mode}/{wire}", summarise(submitted, status), load)
    finally:
        cluster.teardown()
        standalone.down(state_dir)


def main() -> None:
    # A SIGTERM unwinds like Ctrl-C, so the processes started below are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--mode", choices=["script", "function", "both"], default="both")
    parser.add_argument(
        "--wire",
        choices=["mtls", "plaintext", "both"],
        default="mtls",
        help="mutual TLS (the default path), loopback plaintext, or both one after the other",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        help="the job's checkpointEvery (default: the job default, every round)",
    )
    parser.add_argument(
        "--keep", type=Path, help="work in this folder and keep it (the components' logs, status files)"
    )
    args = parser.parse_args()
    modes = ["script", "function"] if args.mode == "both" else [args.mode]
    wires = ["plaintext", "mtls"] if args.wire == "both" else [args.wire]
    changes = {} if args.checkpoint_every is None else {"checkpointEvery": args.checkpoint_every}
    print(
        f"digits job, 3 clients, {args.rounds} rounds, {os.cpu_count()} cpus, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"{'mode/wire':18} {'round':>11} {'client':>13} {'overhead':>12} {'to round 1':>12}   "
        f"{'to accuracy >= 0.90':24} {'final':>6}"
    )
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            base = args.keep.resolve()
        else:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nsfl-bench-")))
        for wire in wires:
            run_plane(base / wire, wire, modes, args.rounds, changes)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
