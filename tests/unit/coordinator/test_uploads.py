"""The upload gate on its own, without sockets or a selector: what it refuses and why, before anything
about a task changes, and what it does with what it takes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from coordinator.aggregating import StreamingMean
from coordinator.current_round import CurrentRound
from coordinator.lookahead import Lookahead
from coordinator.model_state import GlobalModel
from coordinator.rounds import RoundBook, TaskOutcome, Ticket
from coordinator.uploads import Uploads
from libs.protos import common_pb2, coordinator_pb2
from libs.tasks.serde import algorithm_from_proto, parameters_from_proto
from libs.weights.tensors import encode, sha256_hex
from tests.unit.coordinator.test_round_runner import PLAN

WEIGHTS = {"w": np.ones((2, 2), np.float32)}


def nothing_ahead(*args: Any) -> Any:
    raise AssertionError("the gate never prepares a round")


def gate(kind: str = "train", *, secure: bool = False) -> tuple[Uploads, CurrentRound, Ticket]:
    """A gate over round 1 (of ``kind``) with one task, alice's, and nothing offered ahead."""
    current = CurrentRound(PLAN)
    current.model = GlobalModel.from_weights(dict(WEIGHTS), 0)
    current.sink = StreamingMean(current.model.weights)
    current.book = RoundBook(job_id=PLAN.job_id, round_number=1, kind=kind, target=2, minimum=1, deadline=math.inf)
    ticket = current.issue(current.book, "alice", 0)
    lookahead = Lookahead(select=nothing_ahead, offer=nothing_ahead, new_book=nothing_ahead,
                          forget=current.forget, clock=lambda: 0.0)
    return Uploads(current, lookahead, secure=secure), current, ticket


def header(ticket: Ticket, current: CurrentRound, payload: bytes = b"", **fields: Any) -> coordinator_pb2.UpdateHeader:
    assert current.model is not None
    tags: dict[str, Any] = {"job_id": PLAN.job_id, "round": ticket.round, "client_id": ticket.client_id,
                            "task_id": ticket.task_id, "task_token": ticket.token, "kind": ticket.kind,
                            "num_samples": 5, "base_sha256": current.model.sha256, **fields}
    return coordinator_pb2.UpdateHeader(
        **tags, blob=common_pb2.BlobHeader(sha256=sha256_hex(payload), total_size=len(payload)))


def test_an_update_for_a_round_not_in_progress_is_refused_as_late() -> None:
    uploads, current, ticket = gate()
    with pytest.raises(ValueError, match="late update: round 2"):
        uploads.begin_upload(header(ticket, current, round=2))


def test_an_update_against_another_model_is_refused_and_its_task_may_still_upload() -> None:
    uploads, current, ticket = gate()
    with pytest.raises(ValueError, match="not against this round's global model"):
        uploads.begin_upload(header(ticket, current, base_sha256="0" * 64))
    assert uploads.begin_upload(header(ticket, current))[0] is ticket


def test_a_second_upload_of_a_task_while_its_first_arrives_is_refused_as_a_duplicate() -> None:
    uploads, current, ticket = gate()
    uploads.begin_upload(header(ticket, current))
    with pytest.raises(ValueError, match="duplicate update"):
        uploads.begin_upload(header(ticket, current))
    uploads.end_upload(ticket)
    uploads.begin_upload(header(ticket, current))


def test_a_secure_jobs_train_update_is_refused_it_travels_over_secure_aggregate() -> None:
    uploads, current, ticket = gate(secure=True)
    with pytest.raises(ValueError, match="travel over SecureAggregate"):
        uploads.begin_upload(header(ticket, current))


async def test_an_accepted_update_is_folded_into_the_sink_and_wakes_the_runner() -> None:
    uploads, current, ticket = gate()
    payload = bytearray(encode({"w": np.full((2, 2), 2.0, np.float32)}))
    update = header(ticket, current, bytes(payload))
    uploads.begin_upload(update)
    assert await uploads.finish_upload(ticket, update, payload) == (True, "accepted")
    assert current.book is not None and current.book.accepted == [ticket] and ticket.num_samples == 5
    assert current.changed.is_set()
    assert isinstance(current.sink, StreamingMean)
    np.testing.assert_array_equal(current.sink.result()["w"], np.full((2, 2), 2.0, np.float32))


def test_a_failed_task_is_dropped_from_its_round_and_a_report_under_another_token_changes_nothing() -> None:
    uploads, current, ticket = gate()
    forged = common_pb2.TaskStatus(task_id=ticket.task_id, task_token="stolen?", state=common_pb2.TASK_FAILED)
    uploads.report_task(forged)
    assert ticket.outcome is TaskOutcome.OFFERED and not current.changed.is_set()
    uploads.report_task(common_pb2.TaskStatus(task_id=ticket.task_id, task_token=ticket.token,
                                              state=common_pb2.TASK_FAILED, reason="out of memory"))
    assert (ticket.outcome, ticket.reason) == (TaskOutcome.DROPPED, "out of memory") and current.changed.is_set()


async def test_a_task_waiting_for_a_model_gets_its_rounds_model_or_hears_why_not() -> None:
    uploads, current, ticket = gate()
    ready = await uploads.await_model(ticket.task_id, ticket.token, 1, 1.0)
    assert current.model is not None and ready.ready and ready.model_sha256 == current.model.sha256
    assert ready.model == current.model.payload, "a small model rides in the answer"
    assert parameters_from_proto(ready.parameters) == current.plan.parameters, "the task as the round offers it"
    assert algorithm_from_proto(ready.algorithm) == current.plan.algorithm
    unknown = await uploads.await_model(ticket.task_id, "no-such-token", 1, 1.0)
    assert not unknown.ready and "not waiting for a model here" in unknown.reason
    assert current.book is not None
    current.forget(current.book)  # the round closed
    assert uploads.ticket_for(ticket.token) is None
