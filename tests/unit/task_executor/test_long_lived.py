"""What a long-lived executor relies on: evaluation riding on training, function modules loaded
once, one kept channel per coordinator, and many tasks in one process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from task_executor import channels
from task_executor.execution import function_module
from task_executor.runner import run_task
from task_executor.settings import ExecutorSettings
from tests.fixtures.pki import TestPki
from tests.unit.task_executor.fake_coordinator import FakeCoordinator, serve_fake
from tests.unit.task_executor.tasks import linear_weights, read_result, task_json, write_script, write_task

pytest.importorskip("torch")


def settings(coordinator: FakeCoordinator) -> ExecutorSettings:
    """An executor's settings with client c1's certificate, to talk to ``coordinator`` over mutual TLS."""
    return ExecutorSettings(chunk_bytes=64, **coordinator.client_wire)


SCRIPT = """
    import torch
    import nsfl

    model = torch.nn.Linear(4, 2)
    nsfl.load_weights(model)
    if nsfl.is_evaluation():
        if nsfl.get_parameter("broken_evaluation"):
            raise ValueError("no test split")
        nsfl.commit_metrics({"accuracy": 0.5}, num_samples=20)
    else:
        with torch.no_grad():
            model.weight.add_(1.0)
        nsfl.commit_weights(model, num_samples=7)
        nsfl.commit_metrics({"loss": 0.25})
"""


@pytest.fixture
def coordinator(test_pki: TestPki) -> Iterator[FakeCoordinator]:
    fake = FakeCoordinator()
    server = serve_fake(fake, test_pki)
    try:
        yield fake
    finally:
        server.stop()


def run(tmp_path: Path, coordinator: FakeCoordinator, name: str, **task: object) -> tuple[int, dict[str, object]]:
    script = tmp_path / "train.py"
    if not script.exists():
        write_script(tmp_path, SCRIPT)
    sha = coordinator.publish(linear_weights())
    task_dir = write_task(tmp_path / name, task_json(script=script, endpoint=coordinator.endpoint,
                                                     model_sha256=sha, **task))
    return run_task(task_dir, settings(coordinator)), read_result(task_dir)


def test_a_train_task_that_evaluates_first_uploads_the_evaluation_beside_its_update(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    code, result = run(tmp_path, coordinator, "task", evaluate_first=True)

    assert code == 0, result
    [upload] = coordinator.uploads
    metrics = dict(upload.header.metrics)
    assert metrics.pop("nsfl.script_seconds") > 0
    assert metrics == {"loss": 0.25, "evaluate/accuracy": 0.5, "nsfl.evaluate_samples": 20.0}
    assert upload.header.num_samples == 7 and upload.header.kind == "train"
    assert upload.weights()["weight"].min() > 0.99, "the update is the training's, not the evaluation's"


def test_a_failing_evaluation_does_not_fail_the_training(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    code, result = run(tmp_path, coordinator, "task", evaluate_first=True,
                       parameters={"broken_evaluation": True})

    assert code == 0, result
    metrics = dict(coordinator.uploads[0].header.metrics)
    assert "loss" in metrics and not any(name.startswith("evaluate/") for name in metrics)


def test_evaluate_first_is_ignored_outside_train_tasks(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    code, result = run(tmp_path, coordinator, "task", kind="evaluate", evaluate_first=True)

    assert code == 0, result
    assert dict(coordinator.uploads[0].header.metrics).keys() == {"accuracy", "nsfl.script_seconds"}


def test_tasks_run_one_after_another_in_one_process_share_one_kept_channel(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    for index in range(3):
        code, result = run(tmp_path, coordinator, f"task-{index}", task_id=f"ns/job:{index}:train:c1:0")
        assert code == 0, result
    assert len(coordinator.uploads) == 3
    kept = channels.channel_to(coordinator.endpoint, "ns/job", settings(coordinator))
    assert kept is channels.channel_to(coordinator.endpoint, "ns/job", settings(coordinator))
    assert set(coordinator.callers) == {"spiffe://nsfl.local/client/c1"}, "the client's own certificate"


def test_a_function_module_is_loaded_once_per_process_and_again_when_it_changes(tmp_path: Path) -> None:
    loads = tmp_path / "loads.txt"
    source = f"with open({str(loads)!r}, 'a') as f:\n    f.write('x')\nVERSION = {{}}\n"
    module = tmp_path / "functions.py"
    module.write_text(source.format(1))

    first = function_module(module)
    again = function_module(module)
    module.write_text(source.format(2) + "# edited\n")
    edited = function_module(module)

    assert first is again and loads.read_text() == "xx"
    assert edited is not first
