"""The driver with the job's algorithm: broadcasts, failed rounds from hooks, the privacy budget, bad configs.

A scripted round runner stands in for the network: each train round, every
client of the script folds its delta (and, for SCAFFOLD, a control delta)
into the round's aggregator exactly as the servicer would; evaluation rounds
report a fixed accuracy.  The checkpoint and status sinks are the real ones
(SQLite, local files).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator.algorithms import JobAlgorithm
from coordinator.checkpoints import CheckpointStore
from coordinator.driver import Driver
from coordinator.job_plan import JobPlan
from coordinator.model_state import GlobalModel
from coordinator.progress import ProgressReporter
from coordinator.rounds import RoundBook
from libs.aggregation.attachments import CONTROL_DELTA, SERVER_CONTROL, split
from libs.jobspec import JobSpec
from libs.objects import open_object_store
from libs.privacy import PrivacyAccountant
from libs.store import open_document_store
from libs.weights.tensors import decode, encode

CLIENTS = ("a", "b", "c")


def weights(value: float) -> dict[str, np.ndarray]:
    return {"fc.bias": np.full(2, value, np.float32), "fc.weight": np.full((2, 3), value, np.float32)}


@dataclass
class ScriptedRunner:
    """The parts of RoundRunner the driver uses; clients answer every round with a fixed delta."""

    plan: JobPlan
    model: GlobalModel | None = None
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    init_weights: dict[str, np.ndarray] | None = None
    secure_aggregation: Any = None
    published: list[tuple[int, GlobalModel, dict[str, Any]]] = field(default_factory=list)

    async def run_round(
        self,
        round_number: int,
        kind: str,
        *,
        attempt: int,
        target: int,
        minimum: int,
        aggregator: Any = None,
        **options: Any,
    ) -> RoundBook:
        book = RoundBook(
            job_id=self.plan.job_id,
            round_number=round_number,
            kind=kind,
            target=target,
            minimum=minimum,
            deadline=1e12,
        )
        if kind == "train":
            assert self.model is not None
            self.published.append((round_number, self.model, self.plan))
            _, attachments = split(decode(self.model.payload))
            for client in CLIENTS[:target]:
                ticket = book.issue(client, attempt)
                extra = {CONTROL_DELTA: weights(0.1)} if SERVER_CONTROL in attachments else None
                await asyncio.to_thread(
                    aggregator.add, weights(0.01), 10.0, client_id=client, attachments=extra
                )
                book.accept(ticket, 10, {"loss": 1.0})
        else:
            for client in CLIENTS[:target]:
                book.accept(book.issue(client, attempt), 10, {"accuracy": 0.9})
        book.close("scripted")
        return book

    async def pause_before_retry(self) -> None:
        pass


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    documents = await open_document_store(f"sqlite://{tmp_path / 'nsfl.db'}")
    objects = open_object_store(f"file://{tmp_path / 'objects'}")
    try:
        yield documents, objects
    finally:
        await documents.close()
        await objects.close()


async def run_job(
    spec: dict[str, Any], stores: tuple[Any, Any], tmp_path: Path, extenders_root: Path | None = None
) -> tuple[str, dict[str, Any], ScriptedRunner]:
    documents, objects = stores
    await objects.put("ns/models/start.safetensors", encode(weights(0.0)))
    spec = {
        "namespace": "ns",
        "runtime": "pytorch",
        "taskEntry": "digits",
        "datasets": ["digits"],
        "modelPath": "models/start.safetensors",
        "clientsPerRound": 3,
        "minClients": 2,
        "evaluateEvery": 0,
        "checkpointEvery": 1,
        "maxRetries": 1,
        "serverLearningRate": 1.0,
        "parameters": {"epochs": 1},
        **spec,
    }
    job = JobSpec.parse({key: value for key, value in spec.items() if value is not None})
    runner = ScriptedRunner(JobPlan.of(job))
    algorithm = JobAlgorithm(job, extenders_root=extenders_root, rng=np.random.default_rng(0))
    reporter = ProgressReporter(tmp_path / "status.json", job_id=runner.plan.job_id)
    driver = Driver(
        job,
        runner=runner,  # type: ignore[arg-type]
        checkpoints=CheckpointStore(documents, objects, namespace="ns", job=job.name),
        objects=objects,
        reporter=reporter,
        step=algorithm,
        make_aggregator=algorithm.new_round,
    )
    state = await driver.run()
    await reporter.close()
    return state, json.loads((tmp_path / "status.json").read_text()), runner


async def test_scaffold_rounds_publish_c_and_tell_clients_the_run(stores: Any, tmp_path: Path) -> None:
    state, status, runner = await run_job(
        {"name": "scaffold", "rounds": 2, "aggregation": {"name": "scaffold"}}, stores, tmp_path
    )
    assert state == "FINISHED" and status["reason"] == "completed 2 rounds"
    (_, first, plan1), (_, second, plan2) = runner.published
    c1 = split(decode(first.payload))[1][SERVER_CONTROL]["fc.bias"]
    c2 = split(decode(second.payload))[1][SERVER_CONTROL]["fc.bias"]
    assert not c1.any() and np.allclose(c2, 0.1)  # c += (3/3) * mean(Delta c)
    assert plan1.algorithm.scaffold_run and plan1.algorithm.scaffold_run == plan2.algorithm.scaffold_run
    assert plan1.parameters == {"epochs": 1}, "the settings never ride among the job's parameters"
    assert status["history"][-1]["scaffold"]["clients"] == 3


async def test_the_privacy_budget_finishes_the_job_early_with_the_reason(stores: Any, tmp_path: Path) -> None:
    spent = PrivacyAccountant(1.0, 1.0, 1e-5)
    target = (spent.epsilon_after(1) + spent.epsilon_after(2)) / 2
    dp = {"clipNorm": 1.0, "noiseMultiplier": 1.0, "targetDelta": 1e-5, "targetEpsilon": target}
    state, status, runner = await run_job(
        {"name": "dp", "rounds": 5, "privacy": {"dp": dp}}, stores, tmp_path
    )
    assert state == "FINISHED" and status["round"] == 1
    assert status["reason"].startswith("target epsilon reached")
    assert status["privacy"]["epsilon"] == pytest.approx(spent.epsilon_after(1))
    assert status["history"][0]["privacy"]["rounds"] == 1
    assert len(runner.published) == 1 and status["final_model"]["size"] > 0


async def test_an_unknown_optimizer_key_fails_the_job_with_a_clear_reason(
    stores: Any, tmp_path: Path
) -> None:
    state, status, runner = await run_job(
        {"name": "bad", "rounds": 1, "aggregation": {"name": "fedadam"}, "optimizer": {"learning_rate": 0.1}},
        stores,
        tmp_path,
    )
    assert state == "FAILED" and runner.published == []
    assert status["reason"].startswith("ValidationFailed: optimizer: unknown parameter 'learning_rate'")
    assert "did you mean 'learningRate'" in status["reason"]


async def test_a_failing_extender_fails_its_rounds_then_the_job_not_the_coordinator(
    stores: Any, tmp_path: Path
) -> None:
    root = tmp_path / "bundles"
    root.mkdir()
    (root / "hooks.py").write_text(
        textwrap.dedent("""
        attempts = []

        def flaky(ctx):
            attempts.append(ctx.round)
            if len(attempts) == 1:
                raise ValueError("first call fails")
            return {"parameters": {"from_hook": len(attempts)}}

        def broken(ctx):
            raise ValueError("the finish hook is broken")
    """)
    )
    spec = {
        "name": "hooks",
        "rounds": 2,
        "scripts": {"entry": "train.py"},
        "taskEntry": None,
        "extenders": {"file": "hooks.py", "broadcast": "flaky"},
    }
    state, status, runner = await run_job(spec, stores, tmp_path, extenders_root=root)
    assert state == "FINISHED"  # attempt 0 of round 1 failed in the hook, attempt 1 went through
    assert [plan.parameters["from_hook"] for _, _, plan in runner.published] == [2, 3]
    assert status["history"][0]["attempt"] == 1

    (tmp_path / "second").mkdir()
    broken = {**spec, "name": "hooks-broken", "extenders": {"file": "hooks.py", "finish": "broken"}}
    state, status, _ = await run_job(broken, stores, tmp_path / "second", extenders_root=root)
    assert state == "FAILED"
    assert status["reason"] == (
        "round 1 failed after 2 attempts: extender finish failed: ValueError: the finish hook is broken"
    )
