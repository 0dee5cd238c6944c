"""Job specs and plans for the coordinator's tests, built the way the coordinator gets them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.job_plan import JobPlan
from libs.jobspec import JobSpec
from libs.jobspec.spec import ExtenderHooks

REQUIRED = {"name": "job", "namespace": "ns", "runtime": "pytorch"}


def _with_required(fields: Mapping[str, Any]) -> dict[str, Any]:
    document = {**REQUIRED, **fields}
    if "scripts" not in document:
        document.setdefault("taskEntry", "train")
    return document


def stored_spec(fields: Mapping[str, Any]) -> JobSpec:
    """A spec as a stored document holds it: schema defaults filled, cross-field rules not run.

    For the coordinator's own checks (``JobAlgorithm.prepare``), which must hold whatever reached it.
    """
    return JobSpec.from_document(_with_required(fields))


def job_spec(**fields: Any) -> JobSpec:
    """A validated spec with ``fields`` (name ``ns/job``, runtime pytorch, task entry ``train`` unless given)."""
    return JobSpec.parse(_with_required(fields))


def job_plan(**fields: Any) -> JobPlan:
    """The rounds' plan of :func:`job_spec` ``(**fields)``."""
    return JobPlan.of(job_spec(**fields))


def hooks_of(fields: Mapping[str, Any]) -> ExtenderHooks:
    hooks = stored_spec(fields).extenders
    assert hooks is not None, "the spec names no extenders"
    return hooks
