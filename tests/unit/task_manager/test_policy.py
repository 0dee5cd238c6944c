"""The offer policy, as a table: each row an offer and a state, and the decision expected."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from task_manager.policy import Accept, PolicyState, Refuse, decide
from task_manager.tasks import TaskKey, effective_timeout
from tests.unit.task_manager.fakes import JOB, offer

NOW = 1_000_000.0
STATE = PolicyState(
    entries={"digits-train": "pytorch", "keras-train": "tensorflow"},
    runtimes=frozenset({"pytorch"}),
    datasets=frozenset({"digits", "mnist"}),
    max_parallel_tasks=2,
    now=NOW,
)
RUNNING = TaskKey(JOB, 3, "train")

CASES: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    ("a fitting offer on an idle host", {}, {}, None),
    ("a retry of a round once the earlier attempt ended", {"attempt": 1}, {}, None),
    ("a deadline in the future", {"deadline": NOW + 5}, {}, None),
    ("a deadline already past", {"deadline": NOW - 2}, {}, "deadline of task"),
    ("an unknown task entry", {"entry": "cifar-train"}, {}, "unknown task entry 'cifar-train'"),
    ("no task entry (a script bundle)", {"entry": ""}, {}, "the offer names no task entry"),
    (
        "a runtime not served",
        {"runtime": "tensorflow", "entry": "keras-train"},
        {},
        "runtime 'tensorflow' is not served",
    ),
    (
        "an entry of another runtime",
        {"runtime": "pytorch", "entry": "keras-train"},
        {"runtimes": frozenset({"pytorch", "tensorflow"})},
        "runs 'tensorflow'",
    ),
    ("a dataset not configured", {"datasets": ("digits", "cifar")}, {}, "dataset cifar not configured"),
    ("an unknown kind", {"kind": "predict"}, {}, "unknown task kind"),
    (
        "no free slot",
        {},
        {"active": {"x:1": TaskKey("ns/a", 1, "train"), "x:2": TaskKey("ns/b", 1, "train")}},
        "no free task slot (2 of 2",
    ),
    (
        "the same (job, round, kind) running",
        {"round": 3, "attempt": 1},
        {"active": {"ns/digits:3:train:c1:0": RUNNING}},
        "already accepted here as task ns/digits:3:train:c1:0",
    ),
    (
        "the same round of another kind",
        {"round": 3, "kind": "evaluate"},
        {"active": {"other": RUNNING}},
        None,
    ),
    (
        "the same round of another job",
        {"round": 3, "job_id": "ns/other"},
        {"active": {"other": RUNNING}},
        None,
    ),
    (
        "the same task id running",
        {"round": 3},
        {"active": {"ns/digits:3:train:c1:0": TaskKey(JOB, 9, "train")}},
        "is already accepted by this client",
    ),
    (
        "a duplicate on a full host says duplicate",
        {"round": 3, "attempt": 1},
        {"active": {"a": RUNNING, "b": TaskKey("ns/b", 1, "train")}},
        "duplicate",
    ),
]


# A task offered ahead (model_follows) queues behind its job's running task instead of taking a slot.
FULL = {"x:1": TaskKey("ns/a", 1, "train"), "x:2": RUNNING}
CASES += [
    (
        "offered ahead, its job running here: queued without a slot",
        {"round": 4, "model_follows": True},
        {"active": FULL, "can_queue": True},
        None,
    ),
    (
        "offered ahead, its job not running here: needs a slot",
        {"round": 4, "model_follows": True, "job_id": "ns/c"},
        {"active": FULL, "can_queue": True},
        "no free task slot",
    ),
    (
        "offered ahead, another task of its job already queued",
        {"round": 5, "model_follows": True},
        {"active": {**FULL, "q": TaskKey(JOB, 4, "train")}, "can_queue": True},
        "no free task slot",
    ),
    (
        "offered ahead to a host without job executors: needs a slot",
        {"round": 4, "model_follows": True},
        {"active": FULL},
        "no free task slot",
    ),
    ("offered ahead on an idle host", {"round": 4, "model_follows": True}, {}, None),
]


@pytest.mark.parametrize(
    ("case", "offer_fields", "state_fields", "refusal"), CASES, ids=[c[0] for c in CASES]
)
def test_policy_decides(
    case: str, offer_fields: dict[str, Any], state_fields: dict[str, Any], refusal: str | None
) -> None:
    decision = decide(offer(**offer_fields), dataclasses.replace(STATE, **state_fields))
    if refusal is None:
        assert decision == Accept()
    else:
        assert isinstance(decision, Refuse)
        assert refusal in decision.reason


def test_a_refusal_for_an_unknown_entry_lists_what_the_client_has() -> None:
    decision = decide(offer(entry="nope"), STATE)
    assert isinstance(decision, Refuse)
    assert "digits-train, keras-train" in decision.reason


@pytest.mark.parametrize(
    ("asked", "cap", "expected"), [(30.0, 60.0, 30.0), (120.0, 60.0, 60.0), (0.0, 60.0, 60.0)]
)
def test_a_task_timeout_is_the_offers_capped_by_the_config(asked: float, cap: float, expected: float) -> None:
    assert effective_timeout(asked, cap) == expected
