"""The ``FederatedJob`` CRD's ``openAPIV3Schema``, derived from the job JSON Schema.

Kubernetes accepts only *structural* schemas written in its own OpenAPI v3
dialect, so the job schema is translated, not copied:

- ``$ref``\\ s are inlined and ``$schema``, ``$id``, ``$defs`` dropped;
- ``additionalProperties: false`` next to ``properties`` is dropped: a
  structural schema may not have both, and the API server prunes unknown
  fields anyway (and rejects them under strict field validation);
- ``additionalProperties: true`` (free-form ``parameters``) becomes
  ``x-kubernetes-preserve-unknown-fields: true``; typed maps
  (``additionalProperties: {type: string}``) stay as they are;
- numeric ``exclusiveMinimum``/``exclusiveMaximum`` become OpenAPI 3.0's
  ``minimum`` plus a boolean;
- ``uniqueItems: true`` (which Kubernetes forbids as quadratic) becomes
  ``x-kubernetes-list-type: set``;
- ``const`` becomes a one-value ``enum``; ``propertyNames`` (label keys) has
  no equivalent and is dropped, so the operator's ``validate_spec`` checks
  those keys;
- any other keyword is a ``ValueError``, so a schema change that Kubernetes
  could not take fails the unit tests rather than ``kubectl apply``.

Identity (``name``, ``namespace``, ``labels``) lives in the object's
``metadata``, so the CRD's ``spec`` leaves those fields out.  Cross-field
rules the schema cannot express are added as CEL ``x-kubernetes-validations``
on ``spec`` for early feedback from ``kubectl``; ``validate_spec`` in the
operator remains the authority.  ``status`` is owned by the scheduler and
left free-form here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from libs.jobspec.manifests import API_VERSION, KIND, METADATA_FIELDS
from libs.jobspec.schema import inlined_schema

# JSONSchemaProps fields this translation may emit (k8s.io/apiextensions v1).
KUBERNETES_KEYWORDS = frozenset(
    {
        "type",
        "description",
        "title",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "enum",
        "default",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "format",
        "nullable",
        "anyOf",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-list-type",
        "x-kubernetes-validations",
    }
)
_DROPPED = frozenset({"$schema", "$id", "$defs", "$comment", "propertyNames", "examples"})
_NAME_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

SPEC_VALIDATIONS: tuple[dict[str, str], ...] = (
    {
        "rule": "(has(self.taskEntry) ? 1 : 0) + (has(self.scripts) ? 1 : 0) == 1",
        "message": "set exactly one of taskEntry or scripts",
    },
    {
        "rule": "(has(self.modelPath) ? 1 : 0) + (has(self.modelRef) ? 1 : 0)"
        " + (has(self.checkpointRef) ? 1 : 0) <= 1",
        "message": "set at most one of modelPath, modelRef or checkpointRef",
    },
    {
        "rule": "!has(self.minClients) || !has(self.clientsPerRound) || self.minClients <= self.clientsPerRound",
        "message": "minClients must not exceed clientsPerRound",
    },
)


def crd_schema() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the ``FederatedJob`` CRD (structural)."""
    job = inlined_schema()
    spec = to_structural({key: value for key, value in job.items() if key not in ("title", "required")})
    for name in METADATA_FIELDS:
        spec["properties"].pop(name, None)
    required = [name for name in job.get("required", []) if name not in METADATA_FIELDS]
    if required:
        spec["required"] = required
    spec["x-kubernetes-validations"] = [dict(rule) for rule in SPEC_VALIDATIONS]
    return {
        "type": "object",
        "description": f"{KIND} ({API_VERSION}): a federated learning job run by nsfl.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "The API version, nsfl.io/v1alpha1."},
            "kind": {"type": "string", "description": "The kind, FederatedJob."},
            "metadata": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 63, "pattern": _NAME_PATTERN}},
            },
            "spec": spec,
            "status": {
                "type": "object",
                "description": "The job's state, progress and results, written by the scheduler.",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    }


def to_structural(node: Mapping[str, Any]) -> dict[str, Any]:
    """One JSON Schema node (``$ref``-free) in Kubernetes' OpenAPI dialect, recursively."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {name: to_structural(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = to_structural(value)
        elif key == "additionalProperties":
            _translate_additional(node, value, out)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "uniqueItems":
            if value:
                out["x-kubernetes-list-type"] = "set"
        elif key == "const":
            out["enum"] = [value]
        elif key == "anyOf" and node.get("x-kubernetes-int-or-string"):
            out[key] = [{"type": "integer"}, {"type": "string"}]
        elif key in KUBERNETES_KEYWORDS and key != "anyOf":
            out[key] = value
        else:
            raise ValueError(f"JSON Schema keyword {key!r} has no Kubernetes structural equivalent")
    return out


def _translate_additional(node: Mapping[str, Any], value: Any, out: dict[str, Any]) -> None:
    if value is True:
        out["x-kubernetes-preserve-unknown-fields"] = True
    elif value is False:
        if "properties" not in node:
            raise ValueError("additionalProperties: false needs properties to mean anything")
    elif isinstance(value, Mapping):
        if "properties" in node:
            raise ValueError("a structural schema cannot have both properties and additionalProperties")
        out["additionalProperties"] = to_structural(value)
    else:
        raise ValueError(f"unsupported additionalProperties {value!r}")
