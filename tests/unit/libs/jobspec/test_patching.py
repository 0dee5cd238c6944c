"""PATCH as a JSON merge patch over the stored spec, with derived defaults re-derived."""

from __future__ import annotations

import pytest

from libs.errors import ValidationFailed
from libs.jobspec import JobSpec, validate_spec
from libs.jobspec.patching import merge_patch, patched_spec

STORED = JobSpec.parse({"name": "j", "namespace": "ns", "runtime": "pytorch", "taskEntry": "t"})


def test_merge_patch_replaces_merges_and_removes() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}
    assert merge_patch(target, {"a": None, "b": {"c": 9}, "e": [2]}) == {"b": {"c": 9, "d": 3}, "e": [2]}
    assert target == {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}


def test_a_derived_default_follows_its_source_unless_the_user_set_it() -> None:
    lowered = validate_spec(patched_spec(STORED, {"clientsPerRound": 1, "roundTimeoutSeconds": 60}))
    assert lowered["minClients"] == 1 and lowered["taskTimeoutSeconds"] == 60
    pinned = validate_spec(patched_spec(STORED, {"clientsPerRound": 5, "minClients": 2}))
    assert pinned["minClients"] == 2


def test_setting_a_model_source_drops_the_written_in_client_initialisation() -> None:
    spec = patched_spec(STORED, {"modelPath": "models/m/1/model.safetensors"})
    assert "initialModel" not in spec
    assert validate_spec(spec)["modelPath"] == "models/m/1/model.safetensors"


def test_the_identity_of_a_job_cannot_change() -> None:
    with pytest.raises(ValidationFailed, match="body.name"):
        patched_spec(STORED, {"name": "other"})
    assert patched_spec(STORED, {"name": "j"})["name"] == "j"
