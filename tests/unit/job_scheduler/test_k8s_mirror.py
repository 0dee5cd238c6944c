"""The pure rules of the FederatedJob mirror: which object is whose, and which patch changes anything."""

from __future__ import annotations

from typing import Any

import pytest
from kmock._internal import dicts

from job_scheduler.documents import new_job
from job_scheduler.k8s_mirror import (
    CREATED_AT_ANNOTATION,
    belongs,
    changes,
    federatedjob_for,
    merge_patch,
    runs_its_spec,
    spec_of,
)
from libs.jobspec import JobSpec
from tests.unit.job_scheduler.fakes import spec


def stored(name: str = "mnist", **changes_: Any) -> dict[str, Any]:
    return new_job(JobSpec.parse(spec(name, "team-a", **changes_)), now=1_700_000_000.25)


@pytest.mark.parametrize(
    ("current", "desired"),
    [
        ({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 5}}),
        ({"a": [1, 2]}, {"a": [2]}),
        ({}, {"x": {"y": {"z": 1}}}),
        ({"gone": {"deep": 1}, "kept": 1}, {"kept": 1}),
    ],
)
def test_a_merge_patch_turns_the_current_object_into_the_desired_one(
    current: dict[str, Any], desired: dict[str, Any]
) -> None:
    patch = merge_patch(current, desired)
    assert dicts.patch_dict(current, patch) == desired
    assert changes(current, patch)
    assert not changes(desired, merge_patch(desired, desired))


def test_a_patch_that_only_repeats_the_status_changes_nothing() -> None:
    status = {"state": "RUNNING", "lastMetrics": {"accuracy": 0.5}, "finalModel": None}
    assert not changes(status, {"state": "RUNNING", "lastMetrics": {"accuracy": 0.5, "loss": None}})
    assert changes(status, {"lastMetrics": {"accuracy": 0.6}})
    assert changes({"specError": {"message": "x"}}, {"specError": None})


def test_an_object_belongs_to_the_job_that_was_applied_as_it_or_that_made_it() -> None:
    job = stored()
    made = {**federatedjob_for(job), "metadata": {**federatedjob_for(job)["metadata"], "uid": "u-2"}}
    assert made["metadata"]["annotations"][CREATED_AT_ANNOTATION] == "1700000000.25"
    assert belongs(made, job)
    applied = {"metadata": {"name": "mnist", "uid": "u-1"}}
    assert belongs(applied, {**job, "resourceUid": "u-1"})
    assert not belongs(applied, job), "unmarked: neither its uid nor the mirror's mark"
    newer = {**job, "createdAt": job["createdAt"] + 5}
    assert not belongs(made, newer), "an older object never stands for a newer job of the same name"


def test_the_object_of_a_rest_job_asks_for_exactly_the_stored_spec() -> None:
    job = stored(rounds=7, labels={"team": "vision"})
    federated_job = federatedjob_for(job)
    assert federated_job["metadata"]["labels"] == {"team": "vision"}
    assert "name" not in federated_job["spec"] and federated_job["spec"]["rounds"] == 7
    assert spec_of(federated_job).to_document() == job["spec"] and runs_its_spec(federated_job, job)
    assert not runs_its_spec({**federated_job, "spec": {**federated_job["spec"], "rounds": 8}}, job)
    assert not runs_its_spec({**federated_job, "spec": {"rounds": 0}}, job), "invalid: not what runs"
