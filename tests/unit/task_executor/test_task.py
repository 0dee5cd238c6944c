"""``task.json`` is checked field by field against docs/contracts.md before anything runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from task_executor.errors import InvalidTask
from task_executor.task import parse_task, read_task, write_result
from tests.unit.task_executor.tasks import task_json

SHA = "b" * 64


def _task(**overrides: Any) -> dict[str, Any]:
    return task_json(
        script=Path("/srv/train.py"), endpoint="127.0.0.1:5000", **{"model_sha256": SHA, **overrides}
    )


def test_a_contract_task_parses() -> None:
    spec = parse_task(_task())
    assert (spec.job_id, spec.namespace, spec.round, spec.kind, spec.runtime) == (
        "ns/job",
        "ns",
        3,
        "train",
        "pytorch",
    )
    assert spec.entry.script == Path("/srv/train.py") and spec.entry.mode == "script"
    assert spec.total_samples == 600


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "predict"}, "kind must be one of train, evaluate, init"),
        ({"runtime": "jax"}, "runtime must be one of pytorch, tensorflow"),
        ({"round": True}, "'round' must be int, got bool"),
        ({"round": -1}, "must not be negative"),
        ({"model_sha256": "abc"}, "a train task needs model_sha256"),
        ({"model_sha256": "", "kind": "evaluate", "model_follows": True}, "an evaluate task needs model_sha256"),
        ({"model_sha256": "abc", "model_follows": True}, "a train task needs model_sha256"),
        ({"job_id": "Job"}, "job_id must read '<namespace>/<name>'"),
        ({"namespace": "other"}, "does not match job_id"),
        ({"client_id": "-x"}, "is not a valid client id"),
        ({"entry": {"script": "train.py"}}, "entry.script must be an absolute path"),
        ({"entry": {"script": "/a.py", "mode": "notebook"}}, "entry.mode must be one of script, function"),
        ({"datasets": {"digits": 3}}, "datasets['digits'] must be str"),
        ({"dataset_samples": {"digits": -1}}, "must not be negative"),
        ({"deadline_unix": float("nan")}, "'deadline_unix' must be a positive number"),
    ],
)
def test_a_contract_breach_is_named(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidTask) as caught:
        parse_task(_task(**overrides))
    assert message in str(caught.value)


def test_init_needs_no_model_and_the_working_dir_defaults_to_the_scripts() -> None:
    spec = parse_task(_task(kind="init", model_sha256="", entry={"script": "/srv/job/train.py"}))
    assert spec.model_sha256 == "" and spec.entry.working_dir == Path("/srv/job")


def test_a_train_task_offered_ahead_has_its_model_to_follow() -> None:
    spec = parse_task(_task(model_sha256="", model_follows=True))
    assert spec.model_follows and spec.model_sha256 == ""
    assert not parse_task(_task()).model_follows


def test_unknown_keys_are_tolerated_but_logged(caplog: pytest.LogCaptureFixture) -> None:
    parse_task(_task(gpu_index=0))
    assert "gpu_index" in caplog.text


def test_unreadable_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(InvalidTask, match="cannot read"):
        read_task(tmp_path)
    (tmp_path / "task.json").write_text("{not json")
    with pytest.raises(InvalidTask, match="is not valid JSON"):
        read_task(tmp_path)
    (tmp_path / "task.json").write_text("[]")
    with pytest.raises(InvalidTask, match="must hold a JSON object"):
        read_task(tmp_path)


def test_result_json_is_written_whole(tmp_path: Path) -> None:
    write_result(tmp_path, {"state": "failed", "reason": "x", "num_samples": 0, "metrics": {}})
    assert json.loads((tmp_path / "result.json").read_text())["reason"] == "x"
    assert [path.name for path in tmp_path.iterdir()] == ["result.json"]
