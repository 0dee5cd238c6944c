"""Applying a PATCH to a stored job spec (pure: values in, values out).

It lives with the spec because it knows which fields are derived from
which: the REST API's PATCH is its one user.

A PATCH body is a JSON merge patch (RFC 7386) over the spec: fields given
replace the stored ones, ``null`` removes a field, nested objects merge.
The result is validated like a new submission.

One wrinkle comes from "defaults are written into the stored spec"
(DESIGN §4): some defaults are *derived* from another field
(``minClients`` from ``clientsPerRound``, ``taskTimeoutSeconds`` from
``roundTimeoutSeconds``, ``initialModel: client`` from the absence of a
model source).  Patching only ``clientsPerRound: 1`` onto a spec whose
derived ``minClients`` is still 2 would fail validation for a field the
user never wrote.  So a derived field that still equals what it was
derived from, and that the patch does not mention, is dropped before
validation and derived again from the new value.

``name`` and ``namespace`` are the job's identity and cannot change.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from libs.errors import ValidationFailed
from libs.jobspec.defaults import MODEL_SOURCES
from libs.jobspec.spec import JobSpec

# derived field -> the field its default copies
DERIVED_FROM = {"minClients": "clientsPerRound", "taskTimeoutSeconds": "roundTimeoutSeconds"}
IDENTITY = ("name", "namespace")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: the result of applying ``patch`` to ``target`` (neither is changed)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(copy.deepcopy(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def patched_spec(spec: JobSpec, patch: Mapping[str, Any]) -> dict[str, Any]:
    """The spec to validate: ``patch`` merged onto the stored ``spec`` with stale derived defaults dropped."""
    current = spec.to_document()
    problems = [
        {
            "path": f"body.{field}",
            "message": f"the job's {field} cannot change (it is {current.get(field)!r})",
        }
        for field in IDENTITY
        if field in patch and patch[field] != current.get(field)
    ]
    if problems:
        raise ValidationFailed(
            "; ".join(f"{p['path']}: {p['message']}" for p in problems), details={"errors": problems}
        )
    base = dict(copy.deepcopy(current))
    for derived, source in DERIVED_FROM.items():
        if source in patch and derived not in patch and base.get(derived) == current.get(source):
            base.pop(derived, None)
    if any(patch.get(source) is not None for source in MODEL_SOURCES) and "initialModel" not in patch:
        base.pop("initialModel", None)
    if "scripts" in patch and "mode" not in patch:
        # ``mode`` defaults from scripts.mode; let the new bundle's mode (or the default) decide again.
        base.pop("mode", None)
    result: dict[str, Any] = merge_patch(base, patch)
    return result
