"""Offline checks of Kubernetes objects: the real API schemas, and a CRD's own schema.

Shared by the builder unit tests and the deploy contract tests.  No cluster
can run here (tests need no Docker engine), so objects are validated the two
ways the API server would: the built-in kinds against the Kubernetes JSON
schemas that ``kubernetes-validate`` ships (strict: unknown fields fail, as
with ``kubectl apply --validate=strict``), and custom resources against the
CRD's ``openAPIV3Schema`` with ``jsonschema``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonschema
import kubernetes_validate  # the "test" extra: kubernetes-validate

# The oldest Kubernetes the manifests promise to work on (CEL rules in CRDs are GA
# from 1.29), and the newest whose schemas the installed kubernetes-validate ships.
OLDEST_KUBERNETES = "1.29.0"
NEWEST_KUBERNETES = kubernetes_validate.utils.latest_version()
KUBERNETES_VERSIONS = (OLDEST_KUBERNETES, NEWEST_KUBERNETES)


def kubernetes_problems(obj: Mapping[str, Any]) -> list[str]:
    """Why ``obj`` would be refused by the API server's schema, per version; empty if it would not."""
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(dict(obj), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(part) for part in error.path)
            problems.append(
                f"{obj['kind']}/{obj['metadata'].get('name')} on {version}: {where}: {error.message}"
            )
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{obj['kind']} on {version}: {error.message}")
    return problems


def closed(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with unknown fields refused wherever Kubernetes would prune or reject them.

    A structural schema leaves out ``additionalProperties: false``; the API
    server drops (or, with strict field validation, refuses) unknown fields
    anyway, except under ``x-kubernetes-preserve-unknown-fields``.
    """
    out = copy.deepcopy(dict(schema))
    _close(out)
    return out


def _close(node: dict[str, Any]) -> None:
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node.setdefault("additionalProperties", False)
    for sub in node.get("properties", {}).values():
        _close(sub)
    if isinstance(node.get("items"), dict):
        _close(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        _close(node["additionalProperties"])


def custom_resource_problems(obj: Mapping[str, Any], crd: Mapping[str, Any]) -> list[str]:
    """Why ``obj`` does not fit the served version of ``crd``; empty if it does.

    OpenAPI 3.0 schemas follow JSON Schema draft 4 (boolean ``exclusiveMinimum``).
    ``metadata`` stays open (Kubernetes validates it itself); ``spec`` is closed.
    """
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    schema["properties"]["spec"] = closed(schema["properties"]["spec"])
    schema["additionalProperties"] = False
    validator = jsonschema.Draft4Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.path)}: {error.message}"
        for error in validator.iter_errors(dict(obj))
    ]
