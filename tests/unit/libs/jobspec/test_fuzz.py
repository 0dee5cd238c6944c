"""Fuzzing: whatever comes in, the only failure is a ValidationFailed, and success is stable."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.errors import PayloadTooLarge, ValidationFailed
from libs.jobspec import load_schema, parse_spec_text, validate_spec
from libs.jobspec.schema import validator
from tests.unit.libs.jobspec.specs import full, minimal

FIELDS = list(load_schema()["properties"])
NESTED_FIELDS = [
    "name",
    "version",
    "job",
    "round",
    "entry",
    "bundle",
    "mode",
    "labels",
    "resources",
    "cpus",
    "threshold",
    "dp",
    "secureAggregation",
    "clipNorm",
    "noiseMultiplier",
    "requests",
    "limits",
    "cpu",
    "memory",
    "file",
    "finish",
    "params",
    "keepCheckpoints",
]
KEYS = st.one_of(st.sampled_from(FIELDS + NESTED_FIELDS), st.text(max_size=12))

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["pytorch", "fedavg", "krum", "500m", "1Gi", "models/a", "x", "client", "function"]),
    st.dates(),
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(KEYS, inner, max_size=4),
    ),
    max_leaves=20,
)
# Values that are often valid somewhere, so mutated specs also reach the success path and the rules.
PLAUSIBLE = st.one_of(
    st.sampled_from([0, 1, 2, 3, 5, 10, 300, 0.5, 1.0, 1.5, 2.0, True, False, "x", "2", "500m", "models/a"]),
    # Fresh containers each time: a shared one would let later mutations build cycles.
    st.sampled_from(
        [{}, [], {"name": "m"}, {"job": "j"}, {"entry": "t.py"}, ["a", "b", "c"], {"threshold": 2}]
    ).map(copy.deepcopy),
)
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(raw: Any) -> None:
    """validate_spec either fails cleanly or returns a valid, stable spec."""
    before = copy.deepcopy(raw)
    try:
        spec = validate_spec(raw)
    except ValidationFailed as error:
        assert error.message
        assert error.details["errors"]
        assert all(set(e) == {"path", "message"} for e in error.details["errors"])
    else:
        assert validator().is_valid(spec)
        assert validate_spec(spec) == spec
    assert raw == before or raw != raw  # unchanged (NaN never equals itself)


@FUZZ
@given(JSONISH)
def test_any_value_is_either_valid_or_a_validation_failure(raw: Any) -> None:
    check(raw)


@FUZZ
@given(st.dictionaries(KEYS, JSONISH, max_size=6))
def test_any_mapping_is_either_valid_or_a_validation_failure(raw: dict[Any, Any]) -> None:
    check(raw)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid spec with a few fields replaced, deleted or added: reaches the cross-field rules."""
    spec: Any = draw(st.sampled_from([full, minimal]))()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(spec) or [("rounds",)]))
        parent: Any = spec
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(KEYS)] = draw(st.one_of(PLAUSIBLE, JSONISH))
        else:
            parent[path[-1]] = draw(st.one_of(PLAUSIBLE, JSONISH))
    result: dict[str, Any] = spec
    return result


@FUZZ
@given(mutated_specs())
def test_mutated_specs_are_either_valid_or_a_validation_failure(raw: dict[str, Any]) -> None:
    check(raw)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.text(alphabet="{}[]:,-&*!|>'\"\n\t #abc01", max_size=200)))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        parsed = parse_spec_text(text, "fuzz.yaml")
    except (ValidationFailed, PayloadTooLarge):
        return
    assert isinstance(parsed, dict)
    check(parsed)


def test_dates_from_yaml_are_named() -> None:
    raw = minimal(parameters={"since": datetime.date(2024, 1, 1)})
    check(raw)


INDEPENDENT_FIELDS = ["description", "labels", "priority", "parameters", "datasets", "random", "untrainedFirst",
                      "optimizer", "output", "aggregation", "selector", "evaluateEvery", "checkpointEvery",
                      "pendingTimeoutSeconds", "maxRetries", "serverLearningRate", "redundancy"]  # fmt: skip


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Specs assembled from valid parts that respect every cross-field rule."""
    example = full()
    spec: dict[str, Any] = {"name": "job-1", "runtime": draw(st.sampled_from(["pytorch", "tensorflow"]))}
    for name in draw(st.lists(st.sampled_from(INDEPENDENT_FIELDS), unique=True)):
        spec[name] = example[name]
    source = draw(st.sampled_from([None, "modelPath", "modelRef", "checkpointRef"]))
    if source == "modelPath":
        spec["modelPath"] = "models/init.safetensors"
    elif source is not None:
        spec[source] = {"modelRef": {"name": "m"}, "checkpointRef": {"job": "older", "round": 3}}[source]
    if draw(st.booleans()):
        spec["taskEntry"] = "train"
    else:
        spec["scripts"] = {"entry": "train.py", "bundle": "bundles/b.tgz"}
    per_round = draw(st.integers(1, 50))
    spec["clientsPerRound"] = per_round
    if draw(st.booleans()):
        spec["minClients"] = draw(st.integers(1, per_round))
    spec["rounds"] = draw(st.integers(1, 100000))
    spec["roundTimeoutSeconds"] = draw(st.integers(1, 86400))
    if draw(st.booleans()):
        spec["taskTimeoutSeconds"] = draw(st.integers(1, spec["roundTimeoutSeconds"]))
    if draw(st.booleans()):
        spec["redundancy"] = draw(st.floats(1.0, 2.0))
    return spec


@FUZZ
@given(valid_specs())
def test_specs_built_from_valid_parts_validate_and_are_stable(raw: dict[str, Any]) -> None:
    spec = validate_spec(raw)
    assert validator().is_valid(spec)
    assert validate_spec(spec) == spec
    assert spec["minClients"] <= spec["clientsPerRound"]
    assert spec["taskTimeoutSeconds"] <= spec["roundTimeoutSeconds"]
    assert ("initialModel" in spec) == (not any(k in raw for k in ("modelPath", "modelRef", "checkpointRef")))
    # what the user wrote is kept (objects may gain nested defaults such as scripts.mode)
    assert all(spec[key] == value for key, value in raw.items() if not isinstance(value, dict))
