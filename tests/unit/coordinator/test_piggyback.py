"""Evaluation riding on the next round's training, and the writes kept out of a round's way.

The fake scheduler is served over mutual TLS as the scheduler's identity, and
the reporter dials it as the coordinator of ``ns/job`` (the job it reports).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest

from coordinator import progress
from coordinator.checkpoint_writer import CheckpointWriter
from coordinator.checkpoints import unpack
from coordinator.growing_json import GrowingListEncoder, encode_object
from coordinator.piggyback import EvaluationPiggyback, take_evaluation
from coordinator.progress import ProgressReporter
from coordinator.rounds import Ticket
from libs.protos import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from libs.wire import Wire
from tests.fixtures.pki import TestPki


def ticket(client: str, metrics: dict[str, float]) -> Ticket:
    return Ticket(task_id=f"t-{client}", token="x", client_id=client, round=2, kind="train", attempt=0,
                  num_samples=100, metrics=dict(metrics))


def test_evaluation_metrics_leave_the_tickets_weighted_by_the_samples_evaluated() -> None:
    tickets = [
        ticket("a", {"loss": 0.4, "evaluate/accuracy": 0.9, "nsfl.evaluate_samples": 30}),
        ticket("b", {"loss": 0.2, "evaluate/accuracy": 0.6, "nsfl.evaluate_samples": 10}),
        ticket("c", {"loss": 0.3}),
    ]
    assert take_evaluation(tickets) == pytest.approx({"accuracy": 0.825})
    assert [t.metrics for t in tickets] == [{"loss": 0.4}, {"loss": 0.2}, {"loss": 0.3}]


def test_round_k_is_evaluated_by_round_k_plus_1_except_the_last() -> None:
    every_round = EvaluationPiggyback(evaluate_every=1, rounds=5)
    assert [every_round.defers(k) for k in range(1, 6)] == [True, True, True, True, False]
    history: list[dict[str, Any]] = [{"round": 1}]
    assert not every_round.wanted(1, [])
    assert every_round.wanted(2, history)
    assert not every_round.wanted(3, history), "only the round right after"
    history[0]["evaluation"] = {"accuracy": 0.5}
    assert not every_round.wanted(2, history), "already evaluated"

    every_other = EvaluationPiggyback(evaluate_every=2, rounds=6)
    assert [every_other.defers(k) for k in range(1, 7)] == [False, True, False, True, False, False]
    assert not every_other.wanted(2, [{"round": 1}]) and every_other.wanted(3, [{"round": 2}])
    assert not EvaluationPiggyback(evaluate_every=0, rounds=5).defers(1)


def test_filing_gives_the_previous_round_its_evaluation_and_when() -> None:
    piggyback = EvaluationPiggyback(evaluate_every=1, rounds=5)
    history: list[dict[str, Any]] = [{"round": 1}]
    tickets = [ticket("a", {"loss": 0.1, "evaluate/accuracy": 0.9, "nsfl.evaluate_samples": 5})]

    revised = piggyback.file(2, tickets, history, now=123.0)

    assert revised is history[0] and revised == {"round": 1, "evaluation": {"accuracy": 0.9}, "evaluatedAt": 123.0}
    assert tickets[0].metrics == {"loss": 0.1}
    assert piggyback.file(2, [ticket("a", {"loss": 0.1})], [{"round": 1}], now=1.0) is None, "nothing came"


def test_growing_lists_are_encoded_once_yet_always_match_a_full_encoding() -> None:
    encoders = {"history": GrowingListEncoder(unsettled=2), "checkpoints": GrowingListEncoder(unsettled=0)}
    status: dict[str, Any] = {"state": "RUNNING", "history": [], "checkpoints": []}
    for round_number in range(1, 6):
        status["history"].append({"round": round_number, "metrics": {"loss": 1 / round_number}})
        if round_number > 1:
            status["history"][-2]["evaluation"] = {"accuracy": round_number / 10}  # changes a round later
        status["checkpoints"].append({"round": round_number})
        assert json.loads(encode_object(status, encoders)) == status
    status["history"] = status["history"][:2]  # replaced (a resumed job): encoded anew
    assert json.loads(encode_object(status, encoders)) == status


async def test_a_progress_update_returns_at_once_and_close_writes_the_last_state(tmp_path: Path) -> None:
    reporter = ProgressReporter(tmp_path / "status.json", job_id="ns/job")
    record = {"round": 1}
    await reporter.update(round=1, round_record=record, state="RUNNING")
    record["evaluation"] = {"accuracy": 0.7}
    await reporter.update(round=1, round_record=record)  # reported again: the same record, not a second
    await reporter.update(state="FINISHED", reason="done")
    await reporter.close()
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "FINISHED" and status["history"] == [{"round": 1, "evaluation": {"accuracy": 0.7}}]


async def serving(scheduler: Scheduler, pki: TestPki) -> tuple[grpc.aio.Server, str]:
    wire = pki.wire(pki.identity("scheduler"))
    server = wire.server()
    scheduler_pb2_grpc.add_JobControlServicer_to_server(scheduler, server)
    port = wire.add_port(server, "127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def coordinator_wire(pki: TestPki) -> Wire:
    return pki.wire(pki.identity("coordinator", "ns", "job"))


class Scheduler(scheduler_pb2_grpc.JobControlServicer):
    def __init__(self) -> None:
        self.reports: list[scheduler_pb2.ProgressReport] = []
        self.arrived = asyncio.Event()

    async def ReportProgress(self, request: scheduler_pb2.ProgressReport, context: Any) -> common_pb2.Ack:
        self.reports.append(request)
        self.arrived.set()
        return common_pb2.Ack(ok=True)

    async def received(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.reports) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def test_a_round_revised_with_its_evaluation_travels_in_the_next_rounds_report(
    tmp_path: Path, test_pki: TestPki,
) -> None:
    scheduler = Scheduler()
    server, address = await serving(scheduler, test_pki)
    try:
        reporter = ProgressReporter(tmp_path / "status.json", job_id="ns/job", scheduler=address,
                                    token="secret", wire=coordinator_wire(test_pki))
        first: dict[str, Any] = {"round": 1}
        await reporter.update(state="RUNNING", round=1, round_record=first)
        await reporter.flush()  # reported before round 2 ends (otherwise both fold into one report)
        first["evaluation"] = {"accuracy": 0.8}
        await reporter.update(round=2, round_record={"round": 2}, revised=(first,))
        await reporter.close()
    finally:
        await server.stop(None)
    assert [(r.round, json.loads(r.round_json)["round"]) for r in scheduler.reports] == [(1, 1), (2, 2)]
    assert [json.loads(t) for t in scheduler.reports[1].revised_rounds_json] == [
        {"round": 1, "evaluation": {"accuracy": 0.8}}]
    assert all(r.coordinator_token == "secret" for r in scheduler.reports)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["history"] == [{"round": 1, "evaluation": {"accuracy": 0.8}}, {"round": 2}]




async def test_rounds_reported_while_the_pace_holds_fold_into_one_report_that_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_pki: TestPki,
) -> None:
    monkeypatch.setattr(progress, "PACE_SECONDS", 60.0)  # nothing after the first report goes unless urgent
    scheduler = Scheduler()
    server, address = await serving(scheduler, test_pki)
    try:
        reporter = ProgressReporter(tmp_path / "status.json", job_id="ns/job", scheduler=address, token="t",
                                    wire=coordinator_wire(test_pki))
        records: list[dict[str, Any]] = [{"round": n} for n in range(1, 5)]
        await reporter.update(state="RUNNING", round=1, round_record=records[0])
        await scheduler.received(1)
        for number in (2, 3, 4):
            revised = records[number - 2]
            revised["evaluation"] = {"accuracy": number / 10}  # the previous round, revised
            await reporter.update(round=number, round_record=records[number - 1], revised=(revised,))
            await reporter.update(checkpoint={"round": number, "key": f"ckpt-{number}"})
        await asyncio.sleep(0.1)
        assert len(scheduler.reports) == 1, "paced: rounds 2-4 wait for the next report"
        await reporter.update(state="FINISHED", reason="done", round=4)
        await scheduler.received(3)  # a state change is not paced
        await reporter.close()
    finally:
        await server.stop(None)
    folded, finished = scheduler.reports[1], scheduler.reports[2]
    assert (folded.state, folded.round, json.loads(folded.round_json)) == ("RUNNING", 4, {"round": 4})
    assert [json.loads(t) for t in folded.revised_rounds_json] == [
        {"round": 1, "evaluation": {"accuracy": 0.2}}, {"round": 2, "evaluation": {"accuracy": 0.3}},
        {"round": 3, "evaluation": {"accuracy": 0.4}}], "every round once, in its newest version"
    assert json.loads(folded.checkpoint_json) == {"round": 4, "key": "ckpt-4"}
    assert [json.loads(t)["round"] for t in folded.earlier_checkpoints_json] == [2, 3]
    assert (finished.state, finished.reason, finished.round_json) == ("FINISHED", "done", "")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "FINISHED" and [r["round"] for r in status["history"]] == [1, 2, 3, 4]
    assert [c["round"] for c in status["checkpoints"]] == [2, 3, 4]


async def test_flush_delivers_what_the_pace_holds_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_pki: TestPki,
) -> None:
    monkeypatch.setattr(progress, "PACE_SECONDS", 60.0)
    scheduler = Scheduler()
    server, address = await serving(scheduler, test_pki)
    try:
        reporter = ProgressReporter(tmp_path / "status.json", job_id="ns/job", scheduler=address,
                                    wire=coordinator_wire(test_pki))
        await reporter.update(state="RUNNING", round=1, round_record={"round": 1})
        await reporter.flush()
        await reporter.update(round=2, round_record={"round": 2})
        await asyncio.wait_for(reporter.flush(), 10)
        assert [r.round for r in scheduler.reports] == [1, 2]
        assert json.loads((tmp_path / "status.json").read_text())["round"] == 2
        await reporter.close()
    finally:
        await server.stop(None)


class SlowStore:
    """The two calls a CheckpointWriter makes of a CheckpointStore."""

    def __init__(self, fail_round: int | None = None) -> None:
        self.saved: list[tuple[int, bytes]] = []
        self.fail_round = fail_round

    async def save_packed(self, round_number: int, payload: bytes) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        if round_number == self.fail_round:
            raise OSError("disk full")
        self.saved.append((round_number, payload))
        return {"round": round_number}


async def test_checkpoints_are_snapshotted_at_once_and_stored_in_order_behind_the_rounds() -> None:
    store = SlowStore()
    reported: list[dict[str, Any]] = []

    async def on_saved(record: dict[str, Any]) -> None:
        reported.append(record)

    writer = CheckpointWriter(store, on_saved)  # type: ignore[arg-type]
    history: list[dict[str, Any]] = [{"round": 1}]
    weights = {"w": np.ones(3, np.float32)}
    writer.submit(1, weights, {}, history)
    history.append({"round": 2})
    writer.submit(2, weights, {}, history)
    assert reported == [], "submit does not wait for the store"
    await writer.drain()

    assert [r["round"] for r in reported] == [1, 2]
    first = unpack(store.saved[0][1], {"key": "k"})
    assert first.extra == {"history": [{"round": 1}]} and first.weights["w"].tolist() == [1.0, 1.0, 1.0]


async def test_a_checkpoint_that_cannot_be_stored_fails_the_next_checkpoint_or_the_drain() -> None:
    async def ignore(record: dict[str, Any]) -> None:
        return None

    writer = CheckpointWriter(SlowStore(fail_round=1), ignore)  # type: ignore[arg-type]
    writer.submit(1, {"w": np.zeros(2, np.float32)}, {}, [])
    with pytest.raises(OSError, match="disk full"):
        await writer.drain()
