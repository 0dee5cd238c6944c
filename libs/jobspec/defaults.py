"""Writing every default into a spec, so the stored spec says what ran.

Most defaults are the schema's ``default`` keywords (the CRD applies the
same ones).  A few depend on other fields and so cannot be stated in a
schema; they are filled here, after the schema's:

- ``mode``: ``scripts.mode`` when that is set, else ``script``; and
  ``scripts.mode`` is then written to match it;
- ``minClients``: ``clientsPerRound``;
- ``taskTimeoutSeconds``: ``roundTimeoutSeconds``;
- ``initialModel``: ``client`` when no model source is given.

The result is also made canonical, with fields in the schema's order: whole numbers in integer fields become
``int`` (JSON Schema accepts ``10.0`` as an integer, Python's ``range`` does
not), quantities given as integers become strings, and a secure-aggregation
``threshold`` of at least 1 becomes an ``int`` count.

Every function here tolerates a spec that failed validation (it skips what
has the wrong type), because defaults are applied before the cross-field
rules run, whether or not the schema found problems.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from libs.jobspec.schema import inlined_schema

MODEL_SOURCES = ("modelPath", "modelRef", "checkpointRef")


def apply_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """Fill ``spec`` in place with every default and make it canonical; returns it."""
    scripts = spec.get("scripts")
    if "mode" not in spec:
        scripts_mode = scripts.get("mode") if isinstance(scripts, dict) else None
        spec["mode"] = scripts_mode if isinstance(scripts_mode, str) else "script"
    if isinstance(scripts, dict) and "mode" not in scripts:
        scripts["mode"] = spec["mode"]
    schema = inlined_schema()
    _fill_schema_defaults(spec, schema)
    _copy_default(spec, "minClients", "clientsPerRound")
    _copy_default(spec, "taskTimeoutSeconds", "roundTimeoutSeconds")
    if "initialModel" not in spec and not any(source in spec for source in MODEL_SOURCES):
        spec["initialModel"] = "client"
    _canonicalise(spec, schema)
    _canonicalise_threshold(spec)
    ordered = _in_schema_order(spec, schema)
    spec.clear()
    spec.update(ordered)
    return spec


def _fill_schema_defaults(node: dict[str, Any], schema: Mapping[str, Any]) -> None:
    for name, sub in schema.get("properties", {}).items():
        if name not in node and "default" in sub:
            node[name] = copy.deepcopy(sub["default"])
        value = node.get(name)
        if isinstance(value, dict) and "properties" in sub:
            _fill_schema_defaults(value, sub)


def _copy_default(spec: dict[str, Any], name: str, source: str) -> None:
    value = spec.get(source)
    if name not in spec and isinstance(value, int) and not isinstance(value, bool):
        spec[name] = value


def _canonicalise(node: Any, schema: Mapping[str, Any]) -> Any:
    """``node`` with integral floats as ints where the schema says integer, int quantities as strings."""
    if schema.get("x-kubernetes-int-or-string") and isinstance(node, int) and not isinstance(node, bool):
        return str(node)
    if schema.get("type") == "integer" and isinstance(node, float) and node.is_integer():
        return int(node)
    if isinstance(node, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in node.items():
            sub = properties.get(key, extra if isinstance(extra, Mapping) else {})
            node[key] = _canonicalise(value, sub)
    elif isinstance(node, list) and isinstance(schema.get("items"), Mapping):
        node[:] = [_canonicalise(item, schema["items"]) for item in node]
    return node


def _in_schema_order(node: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``node`` with its fields in the schema's order (readable output); unknown keys last."""
    properties = schema.get("properties", {})
    ordered = {name: node[name] for name in properties if name in node}
    ordered.update((key, value) for key, value in node.items() if key not in properties)
    for name, value in ordered.items():
        if isinstance(value, dict) and "properties" in properties.get(name, {}):
            ordered[name] = _in_schema_order(value, properties[name])
    return ordered


def _canonicalise_threshold(spec: dict[str, Any]) -> None:
    privacy = spec.get("privacy")
    secure = privacy.get("secureAggregation") if isinstance(privacy, dict) else None
    if not isinstance(secure, dict):
        return
    threshold = secure.get("threshold")
    if isinstance(threshold, float) and threshold >= 1 and threshold.is_integer():
        secure["threshold"] = int(threshold)
