"""The job schema itself and the CRD schema derived from it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from libs.jobspec import crd_schema, load_schema, validate_spec
from libs.jobspec.crd import KUBERNETES_KEYWORDS, to_structural
from libs.jobspec.messages import PATTERN_HINTS_BY_DEF
from libs.jobspec.schema import inline_refs, inlined_schema
from tests.unit.libs.jobspec.specs import minimal


def property_nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (path, schema) under ``properties``, ``items`` and ``additionalProperties``."""
    if not isinstance(node, dict):
        return
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from property_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield f"{path}[]", node["items"]
        yield from property_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield f"{path}.*", node["additionalProperties"]
        yield from property_nodes(node["additionalProperties"], f"{path}.*")


def all_nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from all_nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_nodes(value)


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_load_schema_returns_a_private_copy() -> None:
    load_schema()["properties"].clear()
    assert "rounds" in load_schema()["properties"]


def test_every_property_has_a_description() -> None:
    missing = [path for path, sub in property_nodes(inlined_schema()) if not sub.get("description")]
    assert missing == []


def test_every_fixed_object_refuses_unknown_fields() -> None:
    for node in all_nodes(inlined_schema()):
        if "properties" in node:
            assert node.get("additionalProperties") is False, node.get("description")


def test_schema_defaults_are_valid() -> None:
    validator = Draft202012Validator(load_schema())
    for path, sub in property_nodes(inlined_schema()):
        if "default" in sub:
            assert list(Draft202012Validator(sub).iter_errors(sub["default"])) == [], path
    assert validator.is_valid(validate_spec(minimal()))


def test_every_pattern_has_a_hint_and_is_re2_friendly() -> None:
    defs = load_schema()["$defs"]
    hinted = {defs[name]["pattern"] for name in PATTERN_HINTS_BY_DEF}
    for node in all_nodes(inlined_schema()):
        if "pattern" in node:
            assert node["pattern"] in hinted
            assert not re.search(r"\(\?[=!<]", node["pattern"]), "Kubernetes (RE2) has no lookarounds"
    by_pattern: dict[str, set[str]] = {}
    for name, hint in PATTERN_HINTS_BY_DEF.items():
        by_pattern.setdefault(defs[name]["pattern"], set()).add(hint)
    assert all(len(hints) == 1 for hints in by_pattern.values())


def test_inline_refs_refuses_cycles_and_foreign_refs() -> None:
    with pytest.raises(ValueError, match="cycle"):
        inline_refs({"$ref": "#/$defs/a"}, {"a": {"items": {"$ref": "#/$defs/a"}}})
    with pytest.raises(ValueError, match="unsupported"):
        inline_refs({"$ref": "https://example.com/x.json"}, {})


# --- the CRD schema is structural ---


def assert_structural(node: dict[str, Any], path: str) -> None:
    unknown = set(node) - KUBERNETES_KEYWORDS
    assert not unknown, f"{path}: keywords Kubernetes lacks: {unknown}"
    exempt = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    assert "type" in node or exempt, f"{path}: no type"
    assert not ("properties" in node and "additionalProperties" in node), f"{path}: both kinds of properties"
    assert node.get("uniqueItems") is not True
    for keyword in ("exclusiveMinimum", "exclusiveMaximum"):
        assert isinstance(node.get(keyword, True), bool), f"{path}: {keyword} must be a boolean"
    if "anyOf" in node:
        assert node.get("x-kubernetes-int-or-string") is True
        assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    if node.get("x-kubernetes-list-type") == "set":
        assert node["items"]["type"] in ("string", "integer", "number", "boolean")


def test_crd_schema_is_structural() -> None:
    schema = crd_schema()
    assert schema["type"] == "object"
    assert_structural(schema, "")
    for path, node in property_nodes(schema):
        assert_structural(node, path)
    text = repr(schema)
    for forbidden in ("$ref", "$defs", "$schema", "$id", "oneOf", "allOf", "propertyNames", "'not'"):
        assert forbidden not in text


def test_crd_spec_leaves_identity_to_metadata() -> None:
    spec = crd_schema()["properties"]["spec"]
    assert {"name", "namespace", "labels"}.isdisjoint(spec["properties"])
    assert spec["required"] == ["runtime"]
    assert set(spec["properties"]) == set(load_schema()["properties"]) - {"name", "namespace", "labels"}


def test_crd_translates_what_kubernetes_lacks() -> None:
    spec = crd_schema()["properties"]["spec"]["properties"]
    assert spec["parameters"] == {
        "type": "object",
        "description": spec["parameters"]["description"],
        "maxProperties": 256,
        "x-kubernetes-preserve-unknown-fields": True,
        "default": {},
    }
    assert (
        spec["serverLearningRate"]["minimum"] == 0 and spec["serverLearningRate"]["exclusiveMinimum"] is True
    )
    assert spec["datasets"]["x-kubernetes-list-type"] == "set"
    assert spec["selector"]["properties"]["labels"]["additionalProperties"]["type"] == "string"
    assert spec["optimizer"]["additionalProperties"] == {
        "type": "number",
        "description": "A numeric parameter.",
    }
    cpu = spec["resources"]["properties"]["limits"]["properties"]["cpu"]
    assert cpu["x-kubernetes-int-or-string"] is True and "pattern" in cpu
    assert spec["rounds"]["default"] == 10


def test_crd_has_cel_rules_for_cross_field_checks() -> None:
    rules = crd_schema()["properties"]["spec"]["x-kubernetes-validations"]
    assert [r["message"] for r in rules] == [
        "set exactly one of taskEntry or scripts",
        "set at most one of modelPath, modelRef or checkpointRef",
        "minClients must not exceed clientsPerRound",
    ]


def test_to_structural_refuses_keywords_kubernetes_lacks() -> None:
    with pytest.raises(ValueError, match="oneOf"):
        to_structural({"type": "object", "oneOf": [{"required": ["a"]}]})
    with pytest.raises(ValueError, match="both"):
        to_structural({"type": "object", "properties": {}, "additionalProperties": {"type": "string"}})
    assert to_structural({"type": "string", "const": "x"}) == {"type": "string", "enum": ["x"]}
