"""JobSpec: one typed reading of a validated spec, with every default from the schema."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from libs.errors import ValidationFailed
from libs.jobspec import JobSpec, load_schema, validate_spec
from libs.records import EXIT_CODES, STATES_BY_EXIT_CODE, JobState, exit_code_of

MINIMAL = {"name": "digits", "runtime": "pytorch", "taskEntry": "train"}
# Schema fields read as more than one typed field, or under another name.
READ_AS = {"selector": ("selector_labels", "selector_resources")}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def test_every_field_of_the_schema_has_a_typed_reading() -> None:
    fields = {field.name for field in dataclasses.fields(JobSpec)}
    for name in load_schema()["properties"]:
        assert set(READ_AS.get(name, (snake(name),))) <= fields, name


def test_every_default_is_the_schemas() -> None:
    spec = JobSpec.parse(MINIMAL)
    for name, schema in load_schema()["properties"].items():
        if "default" not in schema or name in READ_AS or isinstance(schema["default"], dict):
            continue
        value = getattr(spec, snake(name))
        expected = schema["default"]
        assert (list(value) if isinstance(value, tuple) else value) == expected, name
    assert spec.aggregation.name == "fedavg" and spec.output.keep_checkpoints == 5
    assert spec.rounds == 10, "the schema's rounds, wherever the spec is read"


def test_derived_defaults_follow_their_source() -> None:
    spec = JobSpec.parse({**MINIMAL, "clientsPerRound": 4, "roundTimeoutSeconds": 60})
    assert (spec.min_clients, spec.task_timeout_seconds) == (4, 60)
    assert spec.initial_model == "client" and spec.mode == "script" and spec.entry == "train"


def test_the_stored_form_is_the_validated_spec_and_reads_back_the_same() -> None:
    raw = {**MINIMAL, "namespace": "team-a", "privacy": {"secureAggregation": {}}, "parameters": {"epochs": 2},
           "selector": {"labels": {"site": "a"}, "resources": {"gpus": 1}}}  # fmt: skip
    spec = JobSpec.parse(raw)
    assert spec.to_document() == validate_spec(raw)
    again = JobSpec.from_document(spec.to_document())
    assert again == spec and again.to_document() == spec.to_document()
    assert spec.secure_aggregation is not None and spec.secure_aggregation.threshold == 0.7
    assert spec.requirement.labels == {"site": "a"} and spec.requirement.resources.gpus == 1
    assert spec.requirement.resources.cpus is None


def test_a_stored_document_missing_a_later_field_reads_with_its_schema_default() -> None:
    stored: dict[str, Any] = {**validate_spec(MINIMAL)}
    del stored["maxRetries"], stored["rounds"]
    spec = JobSpec.from_document(stored)
    assert (spec.max_retries, spec.rounds) == (2, 10)


def test_the_spec_is_frozen_and_its_free_form_parts_read_only() -> None:
    spec = JobSpec.parse({**MINIMAL, "parameters": {"epochs": 2}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.rounds = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.parameters["epochs"] = 3  # type: ignore[index]
    document = spec.to_document()
    document["parameters"]["epochs"] = 5
    assert spec.parameters["epochs"] == 2, "to_document gives a copy"


def test_the_request_namespace_fills_the_spec_or_must_match_it() -> None:
    assert JobSpec.parse(MINIMAL, namespace="team-a").namespace == "team-a"
    assert JobSpec.parse({**MINIMAL, "namespace": "team-a"}, namespace="team-a").job_id == "team-a/digits"
    with pytest.raises(ValidationFailed, match="spec.namespace: is 'team-b', which differs from the request"):
        JobSpec.parse({**MINIMAL, "namespace": "team-b"}, namespace="team-a")


def test_states_and_exit_codes_are_the_coordinators_contract() -> None:
    assert [state.value for state in JobState] == [
        "QUEUED", "PENDING", "STARTING", "RUNNING", "STOPPING", "FINISHED", "FAILED", "STOPPED", "DELETING"]  # fmt: skip
    assert dict(EXIT_CODES) == {JobState.FINISHED: 0, JobState.FAILED: 1, JobState.STOPPED: 3}
    assert STATES_BY_EXIT_CODE[3] is JobState.STOPPED
    assert exit_code_of("FINISHED") == 0 and exit_code_of("RUNNING") is None and exit_code_of("bogus") is None
