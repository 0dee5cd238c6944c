"""Cross-field rules: exactly one task source, at most one model source, counts, privacy, hooks, resources."""

from __future__ import annotations

from typing import Any

import pytest

from libs.errors import ValidationFailed
from libs.jobspec import validate_spec
from tests.unit.libs.jobspec.specs import minimal


def problems(raw: Any) -> dict[str, str]:
    """``{path: message}`` of the ValidationFailed that ``raw`` must raise."""
    with pytest.raises(ValidationFailed) as caught:
        validate_spec(raw)
    return {e["path"]: e["message"] for e in caught.value.details["errors"]}


def test_task_source_is_required() -> None:
    raw = minimal()
    del raw["taskEntry"]
    assert "got neither" in problems(raw)["spec"]


def test_task_source_must_be_one() -> None:
    assert "got both" in problems(minimal(scripts={"entry": "train.py"}))["spec"]


def test_model_sources_are_exclusive() -> None:
    found = problems(minimal(modelPath="models/a", checkpointRef={"job": "older"}))
    assert found["spec"].startswith("set at most one initial model source, got modelPath and checkpointRef")


def test_initial_model_client_conflicts_with_a_source() -> None:
    found = problems(minimal(modelPath="models/a", initialModel="client"))
    assert found["spec.initialModel"] == "cannot be combined with modelPath; remove one of them"


def test_modes_must_agree() -> None:
    raw = minimal(mode="script", scripts={"entry": "t.py", "mode": "function"})
    del raw["taskEntry"]
    assert "disagrees with spec.mode" in problems(raw)["spec.scripts.mode"]


def test_min_clients_must_not_exceed_clients_per_round() -> None:
    assert problems(minimal(minClients=3))["spec.minClients"] == (
        "must not exceed clientsPerRound (2, the default), got 3"
    )
    assert problems(minimal(minClients=5, clientsPerRound=4))["spec.minClients"] == (
        "must not exceed clientsPerRound (4), got 5"
    )


def test_task_timeout_must_fit_in_the_round() -> None:
    found = problems(minimal(taskTimeoutSeconds=400))
    assert (
        found["spec.taskTimeoutSeconds"] == "must not exceed roundTimeoutSeconds (300, the default), got 400"
    )


def test_explicit_clients_must_cover_a_round() -> None:
    found = problems(minimal(clients=["a"], clientsPerRound=2))
    assert found["spec.clients"].startswith("lists 1 client but clientsPerRound is 2")


@pytest.mark.parametrize("threshold", [1, 1.0, 2.5, 3.5])
def test_secure_aggregation_threshold_is_a_fraction_or_a_count(threshold: float) -> None:
    raw = minimal(clientsPerRound=5, privacy={"secureAggregation": {"threshold": threshold}})
    assert "must be a fraction" in problems(raw)["spec.privacy.secureAggregation.threshold"]


def test_secure_aggregation_threshold_must_not_exceed_min_clients() -> None:
    raw = minimal(clientsPerRound=5, minClients=3, privacy={"secureAggregation": {"threshold": 4}})
    assert "must not exceed minClients (3)" in problems(raw)["spec.privacy.secureAggregation.threshold"]
    raw["privacy"]["secureAggregation"]["threshold"] = 3
    assert validate_spec(raw)["privacy"]["secureAggregation"]["threshold"] == 3


@pytest.mark.parametrize("name", ["median", "trimmedmean", "krum", "multikrum"])
def test_robust_aggregation_cannot_see_through_secure_aggregation(name: str) -> None:
    raw = minimal(aggregation={"name": name}, privacy={"secureAggregation": {}})
    assert "secure aggregation hides" in problems(raw)["spec.aggregation.name"]


def test_target_epsilon_needs_noise() -> None:
    raw = minimal(privacy={"dp": {"clipNorm": 1, "noiseMultiplier": 0, "targetEpsilon": 3}})
    assert "greater than 0 when targetEpsilon" in problems(raw)["spec.privacy.dp.noiseMultiplier"]
    raw["privacy"]["dp"].pop("targetEpsilon")
    assert validate_spec(raw)["privacy"]["dp"]["noiseMultiplier"] == 0


def test_extenders_need_a_bundle_and_a_hook() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_spec(minimal(extenders={"file": "hooks.py"}))
    assert caught.value.details["errors"] == [
        {"path": "spec.extenders", "message": "name at least one hook: broadcast, aggregate, finish"},
        {"path": "spec.extenders", "message": "needs scripts: the hooks' file is read from the job's bundle"},
    ]


def test_resource_requests_must_not_exceed_limits() -> None:
    raw = minimal(
        resources={"requests": {"cpu": "1500m", "memory": "2Gi"}, "limits": {"cpu": 1, "memory": "2048Mi"}}
    )
    found = problems(raw)
    assert found == {"spec.resources.requests.cpu": 'must not exceed the limit "1", got "1500m"'}


def test_object_keys_follow_the_object_store_rules() -> None:
    found = problems(minimal(modelPath="models/.nsfl-tmp/a"))
    assert found["spec.modelPath"] == "must not use the reserved segment prefix '.nsfl-'"
    found = problems(minimal(modelPath="models/" + "a" * 256))
    assert found["spec.modelPath"] == "must not have a segment longer than 255 characters"


def test_rule_problems_are_not_repeated_where_the_schema_already_complained() -> None:
    found = problems(minimal(minClients=20000))
    assert found == {"spec.minClients": "must be between 1 and 10000, got 20000"}
