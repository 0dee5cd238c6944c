"""The model registry through the CLI: create, upload, list, download (verified), delete."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.unit.nsfl_ctl.conftest import Run, assert_user_error
from tests.unit.nsfl_ctl.fake_api import FakeApi


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 4096)  # ~1 MiB
    return path


def test_create_model_with_a_file_uploads_version_1_with_its_checksum(
    run: Run, api: FakeApi, weights: Path
) -> None:
    result = run(
        "create", "model", "digits", "--runtime", "pytorch", "--description", "an MLP", "-f", str(weights)
    )
    assert result.exit_code == 0, result.output
    assert "model default/digits created (pytorch)" in result.output and "version 1 uploaded" in result.output
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (
        f"/api/v1/namespaces/default/models/digits/versions?sha256={digest}&description=an+MLP"
        in api.sent("PUT")
    )
    assert api.blobs[("default", "digits", 1)] == weights.read_bytes()


def test_upload_adds_versions_and_get_model_lists_them(run: Run, api: FakeApi, weights: Path) -> None:
    assert run("create", "model", "digits", "--runtime", "pytorch").exit_code == 0
    for _ in range(2):
        assert run("upload", "model", "digits", "-f", str(weights)).exit_code == 0
    listing = run("get", "models")
    assert listing.output.splitlines()[1].split()[:4] == ["digits", "pytorch", "2", "2"]
    shown = run("get", "model", "digits")
    assert shown.exit_code == 0, shown.output
    assert "1.0 MiB" in shown.output and hashlib.sha256(weights.read_bytes()).hexdigest()[:12] in shown.output
    assert json.loads(run("get", "model", "digits", "-o", "json").output)["latest"] == 2


def test_download_writes_the_verified_file(run: Run, api: FakeApi, weights: Path, tmp_path: Path) -> None:
    run("create", "model", "digits", "--runtime", "pytorch", "-f", str(weights))
    target = tmp_path / "out" / "model.safetensors"
    result = run("download", "model", "digits", "-f", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == weights.read_bytes()
    assert f"version 1 written to {target}" in result.output
    assert list(target.parent.iterdir()) == [target]  # no partial file left behind


def test_download_does_not_overwrite_without_force(
    run: Run, api: FakeApi, weights: Path, tmp_path: Path
) -> None:
    run("create", "model", "digits", "--runtime", "pytorch", "-f", str(weights))
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"mine")
    assert_user_error(run("download", "model", "digits", "-f", str(target)), 4, "--force")
    assert target.read_bytes() == b"mine"
    assert run("download", "model", "digits", "-f", str(target), "--force").exit_code == 0
    assert target.read_bytes() == weights.read_bytes()


def test_a_download_that_does_not_match_the_registry_checksum_leaves_nothing(
    run: Run, api: FakeApi, weights: Path, tmp_path: Path
) -> None:
    run("create", "model", "digits", "--runtime", "pytorch", "-f", str(weights))
    api.blobs[("default", "digits", 1)] += b"tampered"  # the bytes no longer match the version's record
    target = tmp_path / "model.safetensors"
    assert_user_error(run("download", "model", "digits", "-f", str(target)), 7, "does not match its SHA-256")
    assert list(tmp_path.glob("*model.safetensors*")) == []


def test_download_of_a_model_without_versions_is_not_found(run: Run, api: FakeApi) -> None:
    run("create", "model", "empty", "--runtime", "tensorflow")
    assert_user_error(run("download", "model", "empty"), 3, "no versions yet")


def test_delete_a_version_then_the_model(run: Run, api: FakeApi, weights: Path) -> None:
    run("create", "model", "digits", "--runtime", "pytorch", "-f", str(weights))
    assert "version 1 deleted" in run("delete", "model", "digits", "--version", "1").output
    assert run("delete", "model", "digits").exit_code == 0
    assert api.models == {}
    assert_user_error(run("delete", "model", "digits"), 3, "not found")


def test_creating_a_model_twice_is_a_conflict(run: Run, api: FakeApi) -> None:
    run("create", "model", "digits", "--runtime", "pytorch")
    assert_user_error(run("create", "model", "digits", "--runtime", "pytorch"), 4, "already exists")


def test_uploading_to_a_missing_model_is_not_found_before_anything_is_streamed(
    run: Run, api: FakeApi, weights: Path
) -> None:
    assert_user_error(run("upload", "model", "nope", "-f", str(weights)), 3, "model 'nope' not found")
    assert api.sent("PUT") == []
