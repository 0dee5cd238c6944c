"""``FederatedJob`` manifests and flat job specs, both ways.

A job reaches nsfl either as a flat spec (REST, ``nsfl-ctl submit -f``) or as
a Kubernetes manifest (``kubectl apply``, or a file written for it)::

    apiVersion: nsfl.io/v1alpha1
    kind: FederatedJob
    metadata: {name: mnist, namespace: team-a, labels: {...}}
    spec: {runtime: pytorch, ...}

In a manifest the identity fields (``name``, ``namespace``, ``labels``) live
in ``metadata`` where Kubernetes expects them, and the CRD's ``spec`` has
none of them (see ``crd``); everything else maps one to one.  Server-set
metadata (``uid``, ``resourceVersion``, annotations ...) and ``status`` are
ignored, so the output of ``kubectl get -o yaml`` reads back as a spec.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from libs.jobspec.messages import Problem, json_type_name
from libs.jobspec.validation import invalid

API_VERSION = "nsfl.io/v1alpha1"
KIND = "FederatedJob"
METADATA_FIELDS = ("name", "namespace", "labels")
MANIFEST_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")


def is_manifest(document: Mapping[str, Any]) -> bool:
    """Whether ``document`` looks like a Kubernetes object rather than a flat spec."""
    return "kind" in document or "apiVersion" in document


def manifest_to_spec(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The flat spec of a ``FederatedJob`` manifest (not yet validated: call ``validate_spec``)."""
    problems = list(_envelope_problems(manifest))
    metadata, spec = manifest.get("metadata"), manifest.get("spec", {})
    if not isinstance(metadata, Mapping):
        problems.append(Problem("metadata", f"must be an object with a name, got {json_type_name(metadata)}"))
        metadata = {}
    elif "name" not in metadata:
        problems.append(Problem("metadata.name", "required field is missing"))
    if not isinstance(spec, Mapping):
        problems.append(Problem("spec", f"must be an object, got {json_type_name(spec)}"))
        spec = {}
    for name in METADATA_FIELDS:
        if name in spec:
            problems.append(Problem(f"spec.{name}", f"set it as metadata.{name} in a {KIND} manifest"))
    if problems:
        raise invalid(problems)
    flat = {name: copy.deepcopy(metadata[name]) for name in METADATA_FIELDS if name in metadata}
    flat.update(copy.deepcopy(dict(spec)))
    return flat


def spec_to_manifest(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``FederatedJob`` manifest of a (validated) flat spec."""
    metadata = {name: copy.deepcopy(spec[name]) for name in METADATA_FIELDS if name in spec}
    body = {key: copy.deepcopy(value) for key, value in spec.items() if key not in METADATA_FIELDS}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": body}


def _envelope_problems(manifest: Mapping[str, Any]) -> list[Problem]:
    problems = []
    if manifest.get("apiVersion") != API_VERSION:
        problems.append(Problem("apiVersion", f"must be {API_VERSION!r}, got {manifest.get('apiVersion')!r}"))
    if manifest.get("kind") != KIND:
        problems.append(Problem("kind", f"must be {KIND!r}, got {manifest.get('kind')!r}"))
    for key in manifest:
        if key not in MANIFEST_FIELDS:
            allowed = ", ".join(MANIFEST_FIELDS)
            problems.append(Problem(str(key), f"unknown field (allowed: {allowed})"))
    return problems
