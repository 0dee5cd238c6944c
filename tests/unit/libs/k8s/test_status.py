"""A FederatedJob's .status as a merge patch computed from the scheduler's job document."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from libs.k8s.crd import build_crd
from libs.k8s.status import federatedjob_status_patch


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "namespace": "team-a", "name": "digits", "spec": {"rounds": 10}, "state": "RUNNING",
        "reason": "round 3 done", "createdAt": 1_700_000_000.0, "updatedAt": 1_700_000_300.5,
        "startedAt": 1_700_000_010.0, "endedAt": None,
        "transitions": [{"from": None, "to": "QUEUED", "event": "SUBMIT", "reason": "submitted", "at": 1.0}],
        "status": {"round": 3, "rounds": 10, "progress": 30.0, "participants": ["c-1", "c-2"],
                   "lastMetrics": {"accuracy": 0.91, "loss": 0.3}, "trainMetrics": {"loss": 0.2},
                   "checkpoints": [{"round": r, "key": f"ns/checkpoints/{r}", "sha256": "ab"} for r in (1, 2, 3)],
                   "finalModel": None},
        "coordinator": {"name": "coord-team-a-digits", "endpoint": "nsfl-coord-digits.team-a.svc:50053",
                        "launches": 1, "restarts": 0, "lastExit": None, "tokenSha256": "f" * 64},
    }  # fmt: skip
    doc.update(changes)
    return doc


def test_the_patch_shows_state_round_progress_metrics_and_checkpoints() -> None:
    status = federatedjob_status_patch(document(), observed_generation=2)["status"]
    assert status == {
        "state": "RUNNING", "reason": "round 3 done", "round": 3, "rounds": 10, "roundText": "3/10",
        "progress": "30%", "participants": ["c-1", "c-2"], "participantCount": 2,
        "lastMetrics": {"accuracy": 0.91, "loss": 0.3}, "trainMetrics": {"loss": 0.2},
        "checkpoints": [{"round": r, "key": f"ns/checkpoints/{r}", "sha256": "ab"} for r in (1, 2, 3)],
        "finalModel": None,
        "coordinator": {"name": "coord-team-a-digits", "endpoint": "nsfl-coord-digits.team-a.svc:50053",
                        "launches": 1, "restarts": 0},
        "startedAt": "2023-11-14T22:13:30Z", "endedAt": None, "updatedAt": "2023-11-14T22:18:20Z",
        "observedGeneration": 2,
    }  # fmt: skip


def test_nothing_secret_or_internal_reaches_the_status() -> None:
    text = repr(federatedjob_status_patch(document()))
    assert "tokenSha256" not in text and "f" * 64 not in text
    assert "transitions" not in text and "spec" not in text


def test_progress_rounds_down_so_100_percent_means_done() -> None:
    doc = document(status={"round": 2, "rounds": 3, "progress": 66.67})
    assert federatedjob_status_patch(doc)["status"]["progress"] == "66%"
    without_percent = document(status={"round": 9, "rounds": 10})
    assert federatedjob_status_patch(without_percent)["status"]["progress"] == "90%"


def test_a_job_not_started_shows_zero_of_its_rounds() -> None:
    doc = document(state="QUEUED", reason="submitted", status={}, coordinator=None)
    status = federatedjob_status_patch(doc)["status"]
    assert (status["round"], status["rounds"], status["roundText"], status["progress"]) == (
        0,
        10,
        "0/10",
        "0%",
    )
    assert status["coordinator"] is None


def test_metrics_that_vanished_are_deleted_not_left_behind_by_the_merge() -> None:
    previous = federatedjob_status_patch(document())["status"]
    doc = document()
    doc["status"]["lastMetrics"] = {"accuracy": 0.95}
    status = federatedjob_status_patch(doc, previous=previous)["status"]
    assert status["lastMetrics"] == {"accuracy": 0.95, "loss": None}
    assert status["trainMetrics"] == {"loss": 0.2}


def test_a_final_model_replaces_null_and_non_finite_metrics_are_dropped() -> None:
    doc = document(state="FINISHED")
    doc["status"]["finalModel"] = {
        "key": "team-a/outputs/digits/model.safetensors",
        "sha256": "cd",
        "size": 10,
    }
    doc["status"]["lastMetrics"] = {"accuracy": float("nan"), "loss": 0.1, "flag": True}
    status = federatedjob_status_patch(doc, previous={"finalModel": None})["status"]
    assert status["finalModel"] == {
        "key": "team-a/outputs/digits/model.safetensors",
        "sha256": "cd",
        "size": 10,
    }
    assert status["lastMetrics"] == {"loss": 0.1}


def test_lists_and_reasons_are_bounded() -> None:
    doc = document(reason="x" * 10_000)
    doc["status"]["participants"] = [f"c-{i}" for i in range(500)]
    doc["status"]["checkpoints"] = [{"round": i, "key": "k", "sha256": "s"} for i in range(1, 40)]
    status = federatedjob_status_patch(doc)["status"]
    assert len(status["participants"]) == 100 and status["participantCount"] == 500
    assert [c["round"] for c in status["checkpoints"]] == list(range(30, 40))
    assert len(status["reason"]) == 2048


def test_the_generation_is_left_alone_when_unknown() -> None:
    assert "observedGeneration" not in federatedjob_status_patch(document())["status"]
    assert federatedjob_status_patch(document(observedGeneration=5))["status"]["observedGeneration"] == 5


def test_the_patched_status_fits_the_crds_status_schema() -> None:
    (version,) = build_crd()["spec"]["versions"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"]["properties"]["status"])
    status = federatedjob_status_patch(document(), observed_generation=1)["status"]
    # `nullable` is OpenAPI's; draft 4 spells it as a list of types.
    for node in schema["properties"].values():
        if node.pop("nullable", False):
            node["type"] = [node["type"], "null"]
    jsonschema.Draft4Validator(schema).validate(status)
