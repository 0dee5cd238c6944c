"""The round book: acceptance, rejection and closing rules of DESIGN §5.4."""

from __future__ import annotations

import pytest

from coordinator.rounds import RoundBook, TaskOutcome, weighted_metrics


def book(target: int = 3, minimum: int = 2, deadline: float = 100.0) -> RoundBook:
    return RoundBook(job_id="ns/job", round_number=1, kind="train", target=target, minimum=minimum,
                     deadline=deadline)


def test_round_closes_as_soon_as_the_target_number_of_updates_arrived() -> None:
    b = book(target=2)
    tickets = [b.issue(c) for c in ("a", "b", "c")]
    for t in tickets[:2]:
        b.accept(b.check_upload(t.task_id, t.token, t.client_id, 1), 10, {})
    assert b.should_close(now=0.0) == "2/2 updates"


def test_round_closes_at_deadline_with_min_clients_and_succeeds() -> None:
    b = book(target=3, minimum=2, deadline=10.0)
    tickets = [b.issue(c) for c in ("a", "b", "c")]
    for t in tickets[:2]:
        b.accept(t, 5, {})
    assert b.should_close(now=9.0) is None
    reason = b.should_close(now=10.0)
    assert reason is not None and "deadline" in reason
    b.close(reason)
    assert b.succeeded


def test_round_fails_when_fewer_than_min_clients_answered_by_the_deadline() -> None:
    b = book(target=3, minimum=2, deadline=10.0)
    t = b.issue("a")
    b.issue("b")
    b.accept(t, 5, {})
    b.close(b.should_close(now=11.0) or "")
    assert not b.succeeded


def test_round_closes_early_when_every_client_answered_or_dropped() -> None:
    b = book(target=3, minimum=2)
    a, bb, c = (b.issue(x) for x in ("a", "b", "c"))
    b.accept(a, 1, {})
    b.accept(bb, 1, {})
    b.drop(c.task_id, "executor crashed")
    assert b.should_close(now=0.0) is not None
    assert b.summary()["dropped"] == {"c": "executor crashed"}


@pytest.mark.parametrize("case", ["bad token", "other client", "duplicate", "late", "dropped"])
def test_uploads_that_must_be_refused_are_refused_with_a_reason(case: str) -> None:
    b = book()
    t = b.issue("a")
    token, client = t.token, "a"
    if case == "bad token":
        token = "forged"
    elif case == "other client":
        client = "b"
    elif case == "duplicate":
        b.accept(t, 1, {})
    elif case == "late":
        b.close("deadline")
    elif case == "dropped":
        b.drop(t.task_id, "lost")
    with pytest.raises(ValueError):
        b.check_upload(t.task_id, token, client, 1)


def test_a_rejected_update_is_recorded_and_does_not_count() -> None:
    b = book(target=1, minimum=1)
    t = b.issue("a")
    b.reject(t.task_id, "non-finite values")
    assert t.outcome is TaskOutcome.REJECTED and not b.accepted
    assert b.summary()["rejected"] == [{"task": t.task_id, "reason": "non-finite values"}]


def test_task_ids_are_unique_per_client_and_attempt() -> None:
    b = book()
    b.issue("a", 0)
    b.issue("a", 1)
    with pytest.raises(ValueError):
        b.issue("a", 0)


def test_metrics_are_weighted_by_sample_count() -> None:
    b = book()
    a, c = b.issue("a"), b.issue("c")
    b.accept(a, 100, {"accuracy": 0.9, "loss": 1.0})
    b.accept(c, 300, {"accuracy": 0.5})
    got = weighted_metrics(b.accepted)
    assert got == {"accuracy": pytest.approx(0.6), "loss": pytest.approx(1.0)}
