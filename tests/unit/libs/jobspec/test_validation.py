"""validate_spec: defaults written in, every mistake named by its path, cross-field rules."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from libs.errors import ValidationFailed
from libs.jobspec import load_schema, validate_spec
from tests.unit.libs.jobspec.specs import full, minimal


def problems(raw: Any) -> dict[str, str]:
    """``{path: message}`` of the ValidationFailed that ``raw`` must raise."""
    with pytest.raises(ValidationFailed) as caught:
        validate_spec(raw)
    errors = caught.value.details["errors"]
    assert [e["path"] for e in errors] == sorted(e["path"] for e in errors)
    assert caught.value.message == "; ".join(f"{e['path']}: {e['message']}" for e in errors)
    return {e["path"]: e["message"] for e in errors}


def test_minimal_spec_is_valid_and_gets_every_default() -> None:
    spec = validate_spec(minimal())
    assert spec == {
        "name": "mnist",
        "namespace": "default",
        "labels": {},
        "priority": 0,
        "runtime": "pytorch",
        "initialModel": "client",
        "taskEntry": "mnist-train",
        "mode": "script",
        "parameters": {},
        "datasets": [],
        "rounds": 10,
        "clientsPerRound": 2,
        "minClients": 2,
        "roundTimeoutSeconds": 300,
        "taskTimeoutSeconds": 300,
        "evaluateEvery": 1,
        "checkpointEvery": 1,
        "serverLearningRate": 1.0,
        "pendingTimeoutSeconds": 300,
        "maxRetries": 2,
        "random": True,
        "untrainedFirst": False,
        "redundancy": 1.0,
        "aggregation": {"name": "fedavg", "params": {}},
        "optimizer": {},
        "output": {"keepCheckpoints": 5},
    }


def test_defaulted_fields_come_in_schema_order() -> None:
    assert list(validate_spec(minimal())) == [
        name for name in load_schema()["properties"] if name in validate_spec(minimal())
    ]


def test_full_spec_is_valid_and_kept_as_written() -> None:
    expected = full()
    expected["resources"]["limits"]["cpu"] = "2"  # integer quantities are stored as strings
    assert validate_spec(full()) == expected


def test_validate_returns_a_new_dict_and_leaves_the_input_alone() -> None:
    raw = minimal(aggregation={"name": "fedprox"})
    before = copy.deepcopy(raw)
    spec = validate_spec(raw)
    spec["aggregation"]["params"]["mu"] = 0.1
    assert raw == before


def test_validating_twice_changes_nothing() -> None:
    once = validate_spec(full())
    assert validate_spec(once) == once
    once = validate_spec(minimal())
    assert validate_spec(once) == once


def test_nested_defaults_fill_objects_that_are_given() -> None:
    spec = validate_spec(
        minimal(privacy={"dp": {"clipNorm": 1, "noiseMultiplier": 0.5}, "secureAggregation": {}})
    )
    assert spec["privacy"]["dp"] == {
        "mode": "central",
        "clipNorm": 1,
        "noiseMultiplier": 0.5,
        "targetDelta": 1e-5,
    }
    assert spec["privacy"]["secureAggregation"] == {"mode": "double-mask", "threshold": 0.7, "bits": 32}
    assert validate_spec(minimal(aggregation={"name": "krum"}))["aggregation"] == {
        "name": "krum",
        "params": {},
    }


def test_dependent_defaults_follow_the_fields_they_copy() -> None:
    spec = validate_spec(minimal(clientsPerRound=7, roundTimeoutSeconds=90))
    assert spec["minClients"] == 7
    assert spec["taskTimeoutSeconds"] == 90


def test_job_mode_defaults_to_scripts_mode() -> None:
    raw = minimal(scripts={"entry": "train.py", "mode": "function"})
    del raw["taskEntry"]
    spec = validate_spec(raw)
    assert spec["mode"] == "function"
    assert spec["scripts"]["mode"] == "function"


def test_scripts_mode_defaults_to_job_mode() -> None:
    raw = minimal(mode="function", scripts={"entry": "train.py"})
    del raw["taskEntry"]
    spec = validate_spec(raw)
    assert spec["scripts"] == {"entry": "train.py", "mode": "function"}


def test_whole_floats_in_integer_fields_become_ints() -> None:
    spec = validate_spec(minimal(rounds=20.0, privacy={"secureAggregation": {"threshold": 2.0}}))
    assert spec["rounds"] == 20 and isinstance(spec["rounds"], int)
    assert isinstance(spec["privacy"]["secureAggregation"]["threshold"], int)


def test_a_model_source_means_no_initial_model_is_written() -> None:
    for source in (
        {"modelPath": "models/a.safetensors"},
        {"modelRef": {"name": "m"}},
        {"checkpointRef": {"job": "j"}},
    ):
        assert "initialModel" not in validate_spec(minimal(**source))


# --- each kind of schema error names the path and what is allowed ---


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"rounds": 0}, "spec.rounds", "must be between 1 and 100000, got 0"),
        ({"rounds": 100001}, "spec.rounds", "must be between 1 and 100000, got 100001"),
        ({"rounds": "ten"}, "spec.rounds", 'must be an integer, got string "ten"'),
        ({"rounds": True}, "spec.rounds", "must be an integer, got boolean true"),
        ({"rounds": 2.5}, "spec.rounds", "must be an integer, got number 2.5"),
        (
            {"serverLearningRate": 0},
            "spec.serverLearningRate",
            "must be greater than 0 and at most 1000, got 0",
        ),
        ({"redundancy": 2.5}, "spec.redundancy", "must be between 1.0 and 2.0, got 2.5"),
        (
            {"runtime": "pytoch"},
            "spec.runtime",
            "must be one of: pytorch, tensorflow, got \"pytoch\" (did you mean 'pytorch'?)",
        ),
        ({"runtime": "jax"}, "spec.runtime", 'must be one of: pytorch, tensorflow, got "jax"'),
        ({"aggregation": {"name": "fedsgd"}}, "spec.aggregation.name", "must be one of: fedavg"),
        ({"name": "MNIST"}, "spec.name", "must be a DNS-1123 label"),
        ({"name": "a" * 64}, "spec.name", "must be at most 63 characters, got 64"),
        ({"name": ""}, "spec.name", "must not be empty"),
        ({"taskEntry": ".hidden"}, "spec.taskEntry", "must be a task name"),
        ({"modelPath": "/etc/passwd"}, "spec.modelPath", "must be a relative path"),
        ({"modelPath": "models/../secrets"}, "spec.modelPath", "no '.' or '..' segment"),
        ({"datasets": ["a", "a"]}, "spec.datasets", 'must not repeat items, got "a" more than once'),
        ({"datasets": [7]}, "spec.datasets[0]", "must be a string, got integer 7"),
        ({"clients": []}, "spec.clients", "must have at least 1 item"),
        ({"labels": {"team": "a b"}}, "spec.labels.team", "must be a label value"),
        ({"labels": {"-bad": "x"}}, 'spec.labels["-bad"]', "invalid key: must be a label key"),
        ({"labels": "team=a"}, "spec.labels", 'must be an object, got string "team=a"'),
        ({"optimizer": {"lr": "fast"}}, "spec.optimizer.lr", 'must be a number, got string "fast"'),
        (
            {"privacy": {"dp": {"clipNorm": 1}}},
            "spec.privacy.dp.noiseMultiplier",
            "required field is missing",
        ),
        (
            {"privacy": {"dp": {"clipNorm": 1, "noiseMultiplier": 1, "targetDelta": 1}}},
            "spec.privacy.dp.targetDelta",
            "must be greater than 0 and less than 1, got 1",
        ),
        (
            {"resources": {"limits": {"memory": "lots"}}},
            "spec.resources.limits.memory",
            "must be a quantity such as '500m'",
        ),
        (
            {"resources": {"limits": {"cpu": 0.5}}},
            "spec.resources.limits.cpu",
            "must be an integer or a quantity",
        ),
        ({"resources": {"limits": {"cpu": -1}}}, "spec.resources.limits.cpu", "must be at least 0, got -1"),
        (
            {"extenders": {"file": "hooks.py", "finish": "1st"}},
            "spec.extenders.finish",
            "must be a Python function name",
        ),
        ({"parameters": {"when": datetime.date(2024, 1, 1)}}, "spec.parameters.when", "must be JSON data"),
        ({"parameters": {"x": float("inf")}}, "spec.parameters.x", "must be a finite number, got inf"),
    ],
)
def test_schema_errors_name_the_path_and_what_is_allowed(
    fields: dict[str, Any], path: str, message: str
) -> None:
    found = problems(minimal(**fields))
    assert path in found, found
    assert message in found[path]


def test_missing_required_fields_are_each_named() -> None:
    found = problems({"taskEntry": "t"})
    assert found["spec.name"] == "required field is missing"
    assert found["spec.runtime"] == "required field is missing (one of: pytorch, tensorflow)"


def test_not_an_object_is_refused() -> None:
    assert problems(["name"]) == {"spec": "must be an object, got array"}


def test_every_problem_is_reported_at_once() -> None:
    found = problems(minimal(rounds=0, foo=1, runtime="x", minClients=5))
    assert set(found) == {"spec.rounds", "spec.foo", "spec.runtime", "spec.minClients"}


def test_message_joins_problems_sorted_by_path() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_spec(minimal(rounds=0, foo=1))
    assert caught.value.message.startswith(
        "spec.foo: unknown field (allowed: name, namespace, description, labels,"
    )
    assert "; spec.rounds: must be between 1 and 100000, got 0" in caught.value.message
    assert caught.value.code == "ValidationFailed"


# --- unknown fields are errors, with a suggestion ---


def test_unknown_top_level_field_is_named_with_a_suggestion() -> None:
    found = problems(minimal(clients_per_round=3))
    assert found["spec.clients_per_round"].startswith(
        "unknown field; did you mean 'clientsPerRound'? (allowed: "
    )
    assert "serverLearningRate" in found["spec.clients_per_round"]


@pytest.mark.parametrize(
    ("fields", "path", "allowed"),
    [
        ({"modelRef": {"name": "m", "tag": "v1"}}, "spec.modelRef.tag", "(allowed: name, version)"),
        (
            {"privacy": {"dp": {"clipNorm": 1, "noiseMultiplier": 1, "epsilon": 3}}},
            "spec.privacy.dp.epsilon",
            "targetEpsilon",
        ),
        ({"selector": {"resources": {"gpu": 1}}}, "spec.selector.resources.gpu", "did you mean 'gpus'?"),
        (
            {"aggregation": {"name": "fedavg", "parameters": {}}},
            "spec.aggregation.parameters",
            "(allowed: name, params)",
        ),
        ({"resources": {"requests": {"cpus": "1"}}}, "spec.resources.requests.cpus", "did you mean 'cpu'?"),
        ({"output": {"path": "x"}}, "spec.output.path", "(allowed: modelName, keepCheckpoints)"),
    ],
)
def test_unknown_nested_fields_are_refused(fields: dict[str, Any], path: str, allowed: str) -> None:
    found = problems(minimal(**fields))
    assert found[path].startswith("unknown field")
    assert allowed in found[path]


def test_free_form_maps_take_any_key() -> None:
    spec = validate_spec(
        minimal(parameters={"anything": {"nested": [1, "two"]}}, aggregation={"params": {"mu": 1}})
    )
    assert spec["parameters"]["anything"] == {"nested": [1, "two"]}


# --- hostile input is bounded ---


def test_deep_nesting_is_refused_without_recursion() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    found = problems(minimal(parameters=deep))
    assert any("nested too deeply" in message for message in found.values())


def test_self_referencing_input_is_refused() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    found = problems(minimal(parameters=loop))
    assert any("nested too deeply" in message for message in found.values())


def test_too_many_values_are_refused() -> None:
    found = problems(minimal(parameters={"big": list(range(200_000))}))
    assert found == {"spec": "too large (at most 100000 values in all)"}


def test_non_string_keys_are_refused() -> None:
    assert "keys must be strings" in problems(minimal(parameters={1: "a"}))["spec.parameters"]
