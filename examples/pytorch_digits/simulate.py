"""Simulate a federated digits job offline: FedAvg over the example's own training code.

``python -m examples.pytorch_digits.simulate --clients 3 --rounds 5 --split iid``
runs, in one process and without any network, what the platform runs across
machines: one ``init`` task creates the model, then every round each client
runs a ``train`` task from the global model, the server averages the deltas
weighted by sample counts (FedAvg), and the new global model is evaluated on
every client's held-out split and on the common held-out set.

Each task goes through :func:`task_executor.execution.execute`, the same code
path a client's executor takes between download and upload, with the same
``train.py`` (``--mode script``) or ``function.py`` (``--mode function``), so
the numbers printed are the numbers a real job with these defaults reaches.
``examples.keras_digits.simulate`` reuses this module for the Keras example.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from examples.pytorch_digits.data import write_splits
from libs.weights.deltas import apply_delta, compute_delta
from libs.weights.tensors import WeightMap
from task_executor.execution import execute
from task_executor.task import Entry, Kind, TaskSpec

HERE = Path(__file__).resolve().parent
JOB_ID = "examples/digits"


@dataclass(frozen=True)
class RoundReport:
    round: int
    train_loss: float
    client_accuracy: float  # sample-weighted mean over the clients' held-out splits
    heldout_accuracy: float
    heldout_loss: float


def task(
    kind: Kind,
    round_number: int,
    entry: Path,
    runtime: str,
    mode: str,
    dataset: Path,
    samples: int,
    parameters: Mapping[str, Any],
) -> TaskSpec:
    return TaskSpec(
        task_id=f"{JOB_ID}:{round_number}:{kind}:{dataset.name}:0",
        job_id=JOB_ID,
        namespace="examples",
        round=round_number,
        attempt=0,
        kind=kind,
        runtime=runtime,
        client_id=dataset.name,
        coordinator_endpoint="offline",
        model_sha256="" if kind == "init" else "0" * 64,
        task_token="offline",
        entry=Entry(
            script=entry, mode="function" if mode == "function" else "script", working_dir=entry.parent
        ),
        parameters=dict(parameters),
        datasets={"digits": str(dataset)},
        dataset_samples={"digits": samples},
    )


def fedavg(global_weights: WeightMap, updates: list[tuple[WeightMap, int]]) -> WeightMap:
    """``global + sum_k n_k (w_k - global) / sum_k n_k`` (McMahan et al. 2017)."""
    total = sum(count for _, count in updates)
    deltas = [(compute_delta(weights, global_weights), count) for weights, count in updates]
    mean = {}
    for name, array in global_weights.items():
        weighted = np.zeros(array.shape, np.float64)
        for delta, count in deltas:
            weighted += delta[name] * (count / total)
        mean[name] = weighted.astype(array.dtype)
    return apply_delta(global_weights, mean)


def simulate(
    entry: Path,
    runtime: str,
    *,
    mode: str = "script",
    clients: int = 3,
    rounds: int = 5,
    split: str = "iid",
    seed: int = 0,
    parameters: Mapping[str, Any] | None = None,
    data_dir: Path | None = None,
) -> list[RoundReport]:
    """Run the job and report every round (see the module docstring)."""
    parameters = dict(parameters or {})
    with tempfile.TemporaryDirectory(prefix="nsfl-digits-") as scratch:
        out = data_dir or Path(scratch)
        shares = write_splits(out, clients, split, seed)
        heldout = out / "heldout"

        def run(kind: Kind, round_number: int, dataset: Path, samples: int, weights: WeightMap | None) -> Any:
            spec = task(kind, round_number, entry, runtime, mode, dataset, samples, parameters)
            return execute(spec, weights, cache={})

        global_weights = run("init", 0, out / "client-0", shares["client-0"]["train"], None).weights
        reports = []
        for round_number in range(1, rounds + 1):
            updates, losses = [], []
            for name, info in shares.items():
                outcome = run("train", round_number, out / name, info["train"], global_weights)
                updates.append((outcome.weights, outcome.num_samples))
                losses.append(outcome.metrics["loss"])
            global_weights = fedavg(global_weights, updates)
            evaluations = [
                run("evaluate", round_number, out / name, info["test"], global_weights)
                for name, info in shares.items()
            ]
            evaluated = sum(e.num_samples for e in evaluations)
            central = run("evaluate", round_number, heldout, 1, global_weights).metrics
            reports.append(
                RoundReport(
                    round=round_number,
                    train_loss=float(np.mean(losses)),
                    client_accuracy=sum(e.metrics["accuracy"] * e.num_samples for e in evaluations)
                    / evaluated,
                    heldout_accuracy=central["accuracy"],
                    heldout_loss=central["loss"],
                )
            )
        return reports


def main(argv: list[str] | None = None, entry_dir: Path = HERE, runtime: str = "pytorch") -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("script", "function"), default="script")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--split", choices=("iid", "noniid"), default="iid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    args = parser.parse_args(argv)
    parameters: dict[str, Any] = {"epochs": args.epochs}
    if args.lr is not None:
        parameters["lr"] = args.lr
    if args.batch_size is not None:
        parameters["batch_size"] = args.batch_size
    entry = entry_dir / ("train.py" if args.mode == "script" else "function.py")
    reports = simulate(
        entry,
        runtime,
        mode=args.mode,
        clients=args.clients,
        rounds=args.rounds,
        split=args.split,
        seed=args.seed,
        parameters=parameters,
    )
    print(f"{runtime} {args.mode} mode, {args.clients} {args.split} clients")
    print("round  train_loss  client_acc  heldout_acc  heldout_loss")
    for report in reports:
        print(
            f"{report.round:5d}  {report.train_loss:10.4f}  {report.client_accuracy:10.4f}  "
            f"{report.heldout_accuracy:11.4f}  {report.heldout_loss:12.4f}"
        )


if __name__ == "__main__":
    main()
