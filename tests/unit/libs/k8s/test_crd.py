"""The FederatedJob CRD: its shape, its schema from the job schema, and its command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from libs.jobspec import crd_schema
from libs.k8s.crd import build_crd, main, render_crd
from tests.unit.libs.k8s.kube_schemas import kubernetes_problems


def test_the_crd_is_a_valid_customresourcedefinition() -> None:
    assert kubernetes_problems(build_crd()) == []


def test_the_crd_names_group_version_and_scope() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "federatedjobs.nsfl.io"
    spec = crd["spec"]
    assert spec["group"] == "nsfl.io" and spec["scope"] == "Namespaced"
    assert spec["names"] == {"kind": "FederatedJob", "listKind": "FederatedJobList", "plural": "federatedjobs",
                             "singular": "federatedjob", "shortNames": ["fljob"], "categories": ["nsfl"]}  # fmt: skip
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns_show_state_round_progress_and_age() -> None:
    (version,) = build_crd()["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"] if "priority" not in c}
    assert list(columns) == ["State", "Round", "Progress", "Age"]
    assert columns["State"]["jsonPath"] == ".status.state"
    assert columns["Round"]["jsonPath"] == ".status.roundText"
    assert columns["Progress"]["jsonPath"] == ".status.progress"
    assert (columns["Age"]["jsonPath"], columns["Age"]["type"]) == (".metadata.creationTimestamp", "date")


def test_the_spec_schema_is_the_job_schemas_and_status_stays_open_for_kopf() -> None:
    (version,) = build_crd()["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["properties"]["spec"] == crd_schema()["properties"]["spec"]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    status = schema["properties"]["status"]
    assert status["type"] == "object" and status["x-kubernetes-preserve-unknown-fields"] is True
    assert {"state", "reason", "round", "rounds", "roundText", "progress", "participants", "lastMetrics",
            "checkpoints", "observedGeneration"} <= set(status["properties"])  # fmt: skip
    for name, node in status["properties"].items():
        assert "type" in node, name


def test_rendering_is_deterministic_yaml_of_the_crd() -> None:
    text = render_crd()
    assert text == render_crd()
    assert text.startswith("# Generated")
    assert yaml.safe_load(text) == build_crd()


def test_write_then_check_passes_and_a_stale_file_fails_with_the_command_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "crd.yaml"
    assert main(["--check", "--output", str(target)]) == 1
    assert main(["--write", "--output", str(target)]) == 0
    assert main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text() + "# edited\n")
    assert main(["--check", "--output", str(target)]) == 1
    assert "python -m libs.k8s.crd --write" in capsys.readouterr().err
