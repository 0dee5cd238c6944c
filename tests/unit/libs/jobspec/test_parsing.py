"""parse_spec_text and manifests: YAML/JSON in, a flat spec out, clear errors with line numbers."""

from __future__ import annotations

import json
import textwrap

import pytest

from libs.errors import PayloadTooLarge, ValidationFailed
from libs.jobspec import manifest_to_spec, parse_spec_text, spec_to_manifest, validate_spec
from tests.unit.libs.jobspec.specs import full, minimal

MANIFEST = textwrap.dedent(
    """\
    apiVersion: nsfl.io/v1alpha1
    kind: FederatedJob
    metadata:
      name: mnist
      namespace: team-a
      labels: {tier: gold}
      uid: 0b9c
      resourceVersion: "12"
    spec:
      runtime: pytorch
      taskEntry: mnist-train
      rounds: 3
    status:
      state: RUNNING
    """
)


def syntax_error(text: str, filename: str = "job.yaml") -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        parse_spec_text(text, filename)
    return caught.value


def test_yaml_spec_is_read() -> None:
    text = "name: mnist\nruntime: pytorch\ntaskEntry: mnist-train\nrounds: 3\n"
    assert parse_spec_text(text) == {
        "name": "mnist",
        "runtime": "pytorch",
        "taskEntry": "mnist-train",
        "rounds": 3,
    }


def test_json_spec_is_read() -> None:
    assert parse_spec_text(json.dumps(minimal()), "job.json") == minimal()
    assert parse_spec_text(json.dumps(full())) == full()


def test_yaml_syntax_error_names_file_line_and_column() -> None:
    error = syntax_error("name: mnist\nruntime: pytorch\n  rounds: 3\n")
    assert error.message.startswith("job.yaml:3:9: mapping values are not allowed here")
    assert error.details["errors"][0]["line"] == 3


def test_unclosed_yaml_flow_names_where_it_started() -> None:
    error = syntax_error("name: mnist\nlabels: {a: b\nrounds: 3\n")
    assert error.message.startswith("job.yaml:3:")
    assert "at line 2" in error.message


def test_json_syntax_error_names_line_and_column() -> None:
    error = syntax_error('{\n  "name": "mnist",\n  "rounds": 3,\n}\n', "job.json")
    assert error.message.startswith("job.json:4:1: ")


def test_duplicate_yaml_key_is_an_error() -> None:
    error = syntax_error("name: a\nrounds: 3\nruntime: pytorch\nrounds: 5\n")
    assert error.message == "job.yaml:4:1: duplicate key 'rounds'"


def test_yaml_merge_keys_may_override() -> None:
    text = "base: &b {x: 1, y: 2}\nparameters:\n  <<: *b\n  x: 3\n"
    assert parse_spec_text(text)["parameters"] == {"x": 3, "y": 2}


def test_duplicate_json_key_is_an_error() -> None:
    error = syntax_error('{"rounds": 1, "rounds": 2}', "job.json")
    assert "duplicate key 'rounds'" in error.message


def test_json_nan_is_refused() -> None:
    error = syntax_error('{"rounds": NaN}', "job.json")
    assert "NaN is not a JSON number" in error.message


def test_python_tags_are_refused() -> None:
    error = syntax_error("name: !!python/object/apply:os.system ['true']\n")
    assert error.message.startswith("job.yaml:1:7: ")
    assert "constructor" in error.message


def test_alias_bomb_is_refused_before_expansion() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 12)
    ]
    error = syntax_error("\n".join(lines) + "\n")
    assert "too large once aliases are expanded" in error.message


def test_shared_aliases_within_bounds_are_fine() -> None:
    text = "p: &p {lr: 0.1}\nparameters: {a: *p, b: *p}\n"
    assert parse_spec_text(text)["parameters"] == {"a": {"lr": 0.1}, "b": {"lr": 0.1}}


def test_recursive_alias_is_refused() -> None:
    error = syntax_error("parameters: &p {self: *p}\n")
    assert "alias" in error.message or "refers to itself" in error.message


def test_empty_and_non_mapping_documents_are_refused() -> None:
    assert syntax_error("").message == "job.yaml: the file is empty; it must hold a job spec"
    assert syntax_error("# nothing\n").message.endswith("the file is empty; it must hold a job spec")
    assert "got array" in syntax_error("- a\n- b\n").message
    assert "got string" in syntax_error("just words\n").message


def test_several_documents_are_refused() -> None:
    error = syntax_error("name: a\n---\nname: b\n")
    assert "expected a single document" in error.message


def test_oversized_text_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_spec_text("x: " + "a" * (1024 * 1024))


def test_deeply_nested_json_is_a_validation_error() -> None:
    error = syntax_error("[" * 100_000 + "]" * 100_000, "job.json")
    assert "nested too deeply" in error.message


def test_manifest_is_flattened_to_a_spec() -> None:
    spec = parse_spec_text(MANIFEST, "job.yaml")
    assert spec == {
        "name": "mnist",
        "namespace": "team-a",
        "labels": {"tier": "gold"},
        "runtime": "pytorch",
        "taskEntry": "mnist-train",
        "rounds": 3,
    }
    assert validate_spec(spec)["namespace"] == "team-a"


def test_manifest_problems_are_reported_together() -> None:
    manifest = {
        "apiVersion": "nsfl.io/v1",
        "kind": "FederatedJob",
        "metadata": {"namespace": "a"},
        "spec": {"name": "x", "runtime": "pytorch"},
        "extra": 1,
    }
    with pytest.raises(ValidationFailed) as caught:
        manifest_to_spec(manifest)
    paths = [e["path"] for e in caught.value.details["errors"]]
    assert paths == ["apiVersion", "extra", "metadata.name", "spec.name"]
    assert "set it as metadata.name" in caught.value.message


def test_wrong_kind_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="kind: must be 'FederatedJob', got 'Job'"):
        parse_spec_text("apiVersion: nsfl.io/v1alpha1\nkind: Job\nmetadata: {name: a}\nspec: {}\n")


def test_spec_and_manifest_round_trip() -> None:
    spec = validate_spec(full())
    manifest = spec_to_manifest(spec)
    assert manifest["metadata"] == {"name": "mnist", "namespace": "team-a", "labels": spec["labels"]}
    assert "name" not in manifest["spec"]
    assert manifest_to_spec(manifest) == spec
