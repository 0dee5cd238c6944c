"""The runner end to end against an in-process fake coordinator, with small torch models."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from libs.protos import coordinator_pb2
from libs.tasks.serde import parameters_to_proto
from libs.weights.tensors import WeightMap
from task_executor import coordinator_client
from task_executor.runner import run_task
from task_executor.settings import ExecutorSettings
from tests.fixtures.pki import TestPki
from tests.unit.task_executor.fake_coordinator import FakeCoordinator, serve_fake
from tests.unit.task_executor.tasks import linear_weights, read_result, task_json, write_script, write_task

pytest.importorskip("torch")

SETTINGS = ExecutorSettings(chunk_bytes=64)  # for tasks that never reach a coordinator



def settings(coordinator: FakeCoordinator) -> ExecutorSettings:
    """An executor's settings with client c1's certificate, to talk to ``coordinator`` over mutual TLS."""
    return ExecutorSettings(chunk_bytes=64, **coordinator.client_wire)


TRAIN_SCRIPT = """
    import sys
    import torch
    import nsfl

    model = torch.nn.Linear(4, 2)
    nsfl.load_weights(model)
    with torch.no_grad():
        model.weight.add_(0.5)
        model.bias.sub_(0.25)
    nsfl.commit_weights(model, num_samples=7)
    nsfl.commit_metrics({"loss": 0.5, "train/accuracy": 0.75})
    print("argv", sys.argv, "round", nsfl.current_round())
"""


@pytest.fixture
def coordinator(test_pki: TestPki) -> Iterator[FakeCoordinator]:
    fake = FakeCoordinator()
    server = serve_fake(fake, test_pki)
    try:
        yield fake
    finally:
        server.stop()


def _run(
    tmp_path: Path, coordinator: FakeCoordinator, source: str, **task: Any
) -> tuple[int, dict[str, Any]]:
    script = write_script(tmp_path, source)
    task_dir = write_task(tmp_path / "task", task_json(script=script, endpoint=coordinator.endpoint, **task))
    code = run_task(task_dir, settings(coordinator))
    return code, read_result(task_dir)


def test_train_uploads_trained_minus_global_with_metrics_and_tags(
    tmp_path: Path, coordinator: FakeCoordinator, capsys: pytest.CaptureFixture[str]
) -> None:
    global_weights = linear_weights()
    sha = coordinator.publish(global_weights)

    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_sha256=sha)

    assert code == 0, result
    assert result == {
        "state": "succeeded",
        "reason": "",
        "num_samples": 7,
        "metrics": {"loss": 0.5, "train/accuracy": 0.75},
    }
    [upload] = coordinator.uploads
    header = upload.header
    assert (header.job_id, header.round, header.client_id, header.attempt) == ("ns/job", 3, "c1", 0)
    assert (header.task_id, header.task_token, header.kind) == ("ns/job:3:train:c1:0", "token-abc", "train")
    user_metrics = {k: v for k, v in header.metrics.items() if k != "nsfl.script_seconds"}
    assert header.num_samples == 7 and user_metrics == {"loss": 0.5, "train/accuracy": 0.75}
    assert header.metrics["nsfl.script_seconds"] >= 0
    assert header.base_sha256 == sha and header.blob.total_size == len(upload.payload)
    delta = upload.weights()
    np.testing.assert_allclose(delta["weight"], np.full((2, 4), 0.5, np.float32), atol=1e-6)
    np.testing.assert_allclose(delta["bias"], np.full(2, -0.25, np.float32), atol=1e-6)
    assert f"argv ['{tmp_path / 'train.py'}'] round 3" in capsys.readouterr().out


def test_the_script_runs_in_its_working_dir_and_the_process_state_is_restored(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    sha = coordinator.publish(linear_weights())
    before = (Path.cwd(), list(sys.argv), list(sys.path))
    source = TRAIN_SCRIPT + "\n    import os\n    assert os.getcwd() == os.path.dirname(__file__)\n"

    code, result = _run(tmp_path, coordinator, source, model_sha256=sha)

    assert code == 0, result
    assert (Path.cwd(), sys.argv, sys.path) == before


def test_default_sample_count_is_the_tasks_dataset_samples(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    sha = coordinator.publish(linear_weights())
    source = TRAIN_SCRIPT.replace("num_samples=7", "")

    code, result = _run(tmp_path, coordinator, source, model_sha256=sha)

    assert code == 0, result
    assert result["num_samples"] == 600 and coordinator.uploads[0].header.num_samples == 600


def test_evaluate_uploads_metrics_only(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    sha = coordinator.publish(linear_weights())
    source = """
        import torch
        import nsfl

        model = torch.nn.Linear(4, 2)
        assert nsfl.load_weights(model)
        assert nsfl.is_evaluation() and nsfl.task_kind() == "evaluate"
        nsfl.commit_metrics({"accuracy": float(model.weight.sum().item() != 0)}, num_samples=120)
    """

    code, result = _run(tmp_path, coordinator, source, kind="evaluate", model_sha256=sha)

    assert code == 0, result
    [upload] = coordinator.uploads
    assert upload.header.kind == "evaluate" and upload.header.blob.total_size == 0 and upload.payload == b""
    assert dict(upload.header.metrics).keys() == {"accuracy", "nsfl.script_seconds"}
    assert upload.header.metrics["accuracy"] == 1.0 and upload.header.num_samples == 120


def test_evaluate_without_metrics_fails_clearly(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    sha = coordinator.publish(linear_weights())
    source = "import torch, nsfl\nnsfl.load_weights(torch.nn.Linear(4, 2))\n"

    code, result = _run(tmp_path, coordinator, source, kind="evaluate", model_sha256=sha)

    assert code != 0 and "without calling nsfl.commit_metrics" in str(result["reason"])
    assert coordinator.uploads == []


def _init_weights(tmp_path: Path, coordinator: FakeCoordinator, job_id: str) -> WeightMap:
    source = """
        import torch
        import nsfl

        model = torch.nn.Linear(4, 2)
        nsfl.load_weights(model)
        raise AssertionError("load_weights returned in an init task")
    """
    code, result = _run(
        tmp_path,
        coordinator,
        source,
        kind="init",
        job_id=job_id,
        task_id=f"{job_id}:0:init:c1:0",
        namespace=None,
    )
    assert code == 0, result
    upload = coordinator.uploads[-1]
    assert upload.header.kind == "init" and upload.header.base_sha256 == ""
    return upload.weights()


def test_init_uploads_full_weights_seeded_by_the_job(
    tmp_path: Path, coordinator: FakeCoordinator, test_pki: TestPki
) -> None:
    first = _init_weights(tmp_path, coordinator, "ns/job")
    torch = pytest.importorskip("torch")
    torch.manual_seed(12345)  # whatever the process did before, the job id decides the init
    again = _init_weights(tmp_path, coordinator, "ns/job")
    other_coordinator = FakeCoordinator()  # another job has its own coordinator (and certificate)
    server = serve_fake(other_coordinator, test_pki, test_pki.identity("coordinator", "ns", "other"))
    try:
        other = _init_weights(tmp_path, other_coordinator, "ns/other")
    finally:
        server.stop()

    assert set(first) == {"weight", "bias"} and coordinator.downloads == []
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not np.array_equal(first["weight"], other["weight"])


def test_a_script_that_raises_fails_with_its_exception_line(
    tmp_path: Path, coordinator: FakeCoordinator, capsys: pytest.CaptureFixture[str]
) -> None:
    sha = coordinator.publish(linear_weights())
    source = "import nsfl\n\ndef step():\n    raise ValueError('loss exploded')\n\nstep()\n"

    code, result = _run(tmp_path, coordinator, source, model_sha256=sha)

    assert code != 0 and result["state"] == "failed"
    assert "ValueError: loss exploded (at train.py, line 4)" in str(result["reason"])
    stderr = capsys.readouterr().err
    assert "Traceback" in stderr and 'train.py", line 6' in stderr and "runpy" not in stderr
    assert coordinator.uploads == []


def test_a_script_that_never_commits_fails_with_a_clear_message(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    sha = coordinator.publish(linear_weights())
    source = "import torch, nsfl\nnsfl.load_weights(torch.nn.Linear(4, 2))\n"

    code, result = _run(tmp_path, coordinator, source, model_sha256=sha)

    assert code != 0
    assert "the script finished without calling nsfl.commit_weights" in str(result["reason"])


def test_a_script_exiting_non_zero_fails(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    sha = coordinator.publish(linear_weights())

    code, result = _run(tmp_path, coordinator, "import sys\nsys.exit(3)\n", model_sha256=sha)

    assert code != 0 and "exited with status 3" in str(result["reason"])


def test_non_finite_trained_weights_are_refused_before_upload(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    sha = coordinator.publish(linear_weights())
    source = TRAIN_SCRIPT.replace("model.bias.sub_(0.25)", "model.bias.fill_(float('nan'))")

    code, result = _run(tmp_path, coordinator, source, model_sha256=sha)

    assert code == 2 and "InvalidWeights" in str(result["reason"]) and "non-finite" in str(result["reason"])
    assert coordinator.uploads == []


def test_a_corrupted_download_fails_with_checksum_mismatch(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    sha = coordinator.publish(linear_weights())
    coordinator.corrupt = True

    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_sha256=sha)

    assert code == 7 and str(result["reason"]).startswith("ChecksumMismatch: ")
    assert coordinator.uploads == []


def test_a_model_that_came_with_the_offer_is_used_without_a_download_or_a_plan_request(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    sha = coordinator.publish(linear_weights())
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "model.safetensors").write_bytes(coordinator.models[sha])

    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_sha256=sha, model_file="model.safetensors",
                        secure_aggregation=False)

    assert code == 0, result
    assert coordinator.downloads == [] and coordinator.plans == []
    [upload] = coordinator.uploads
    np.testing.assert_allclose(upload.weights()["weight"], np.full((2, 4), 0.5, np.float32), atol=1e-6)


PARAMETER_SCRIPT = TRAIN_SCRIPT.replace(
    'nsfl.commit_metrics({"loss": 0.5, "train/accuracy": 0.75})', 'nsfl.commit_metrics({"lr": nsfl.get_parameter("lr")})'
)


@pytest.mark.parametrize("inline", [True, False], ids=["model in the answer", "model downloaded"])
def test_a_task_offered_ahead_takes_its_model_and_parameters_from_await_model(
    tmp_path: Path, coordinator: FakeCoordinator, inline: bool
) -> None:
    sha = coordinator.publish(linear_weights())
    coordinator.await_reply = coordinator_pb2.AwaitModelReply(
        ready=True, model_sha256=sha, model=coordinator.models[sha] if inline else b"",
        parameters=parameters_to_proto({"lr": 0.25}))

    code, result = _run(tmp_path, coordinator, PARAMETER_SCRIPT, model_follows=True, secure_aggregation=False,
                        parameters={"lr": 0.5})

    assert code == 0, result
    [asked] = coordinator.awaits
    assert (asked.job_id, asked.task_id, asked.task_token, asked.round) == ("ns/job", "ns/job:3:train:c1:0",
                                                                             "token-abc", 3)
    assert len(coordinator.downloads) == (0 if inline else 1)
    [upload] = coordinator.uploads
    assert upload.header.base_sha256 == sha and upload.header.metrics["lr"] == 0.25, "the round's parameters"


def test_a_task_offered_ahead_and_withdrawn_ends_quietly_without_an_upload(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    coordinator.await_reply = coordinator_pb2.AwaitModelReply(ready=False, reason="round 3 came first")
    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_follows=True, secure_aggregation=False)
    assert code == 0 and result["state"] == "withdrawn" and result["reason"] == "round 3 came first"
    assert coordinator.uploads == [] and coordinator.downloads == []


def test_an_await_model_answer_whose_model_is_not_its_sha256_fails(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    sha = coordinator.publish(linear_weights())
    coordinator.await_reply = coordinator_pb2.AwaitModelReply(ready=True, model_sha256=sha, model=b"not it")
    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_follows=True, secure_aggregation=False)
    assert code != 0 and result["reason"].startswith("ChecksumMismatch")
    assert coordinator.uploads == []


def test_without_a_plan_in_the_offer_the_executor_asks_for_it(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    sha = coordinator.publish(linear_weights())
    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_sha256=sha)
    assert code == 0, result
    assert len(coordinator.plans) == 1 and len(coordinator.downloads) == 1


def test_a_model_file_that_is_not_the_tasks_model_fails_with_checksum_mismatch(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    sha = coordinator.publish(linear_weights())
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "model.safetensors").write_bytes(coordinator.models[sha][:-1] + b"x")

    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_sha256=sha, model_file="model.safetensors")

    assert code == 7 and str(result["reason"]).startswith("ChecksumMismatch: the model that came with the task")
    assert coordinator.uploads == [] and coordinator.downloads == []


@pytest.mark.parametrize("name", ["", "../model.safetensors", "..", "a/b"])
def test_a_model_file_outside_the_task_folder_is_an_invalid_task(
    tmp_path: Path, coordinator: FakeCoordinator, name: str
) -> None:
    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_sha256="a" * 64, model_file=name)
    assert code != 0 and "model_file must name a file in the task folder" in str(result["reason"])


def test_a_small_update_goes_in_one_message_and_an_older_coordinator_gets_a_stream(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    sha = coordinator.publish(linear_weights())
    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_sha256=sha)
    assert code == 0, result
    coordinator.submit = False
    (tmp_path / "again").mkdir()
    code, result = _run(tmp_path / "again", coordinator, TRAIN_SCRIPT, model_sha256=sha)
    assert code == 0, result
    assert [u.via for u in coordinator.uploads] == ["submit", "stream"]
    assert coordinator.uploads[0].payload == coordinator.uploads[1].payload
    assert coordinator.endpoint in coordinator_client._NO_SUBMIT
    coordinator_client._NO_SUBMIT.discard(coordinator.endpoint)


def test_an_update_above_the_submit_limit_is_streamed(
    tmp_path: Path, coordinator: FakeCoordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_client, "SUBMIT_MAX_BYTES", 16)
    sha = coordinator.publish(linear_weights())
    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_sha256=sha)
    assert code == 0, result
    assert [u.via for u in coordinator.uploads] == ["stream"]


def test_a_broken_download_resumes_from_the_received_offset(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    sha = coordinator.publish(linear_weights())
    coordinator.break_after = 64

    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_sha256=sha)

    assert code == 0, result
    assert [request.offset for request in coordinator.downloads] == [0, 64]
    assert all(request.task_token == "token-abc" for request in coordinator.downloads)


def test_a_rejected_update_fails_with_the_coordinators_reason(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    sha = coordinator.publish(linear_weights())
    coordinator.verdict = (False, "late: round 3 is closed")

    code, result = _run(tmp_path, coordinator, TRAIN_SCRIPT, model_sha256=sha)

    assert code != 0 and "late: round 3 is closed" in str(result["reason"])


def test_a_malformed_task_json_fails_clearly(tmp_path: Path) -> None:
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    (task_dir / "task.json").write_text('{"task_id": "x", "job_id": "ns/job", "client_id": "c1"}')

    code = run_task(task_dir, SETTINGS)

    assert code == 2
    assert read_result(task_dir)["reason"] == "ValidationFailed: task.json: 'kind' is missing"


def test_a_missing_script_fails_before_any_download(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    sha = coordinator.publish(linear_weights())
    task = task_json(script=tmp_path / "absent.py", endpoint=coordinator.endpoint, model_sha256=sha)

    code = run_task(write_task(tmp_path / "task", task), settings(coordinator))

    assert code == 2 and "absent.py is not a file" in str(read_result(tmp_path / "task")["reason"])
    assert coordinator.downloads == []


FUNCTIONS = """
    import torch

    def train(ctx):
        model = torch.nn.Linear(4, 2)
        ctx.load_into(model)
        with torch.no_grad():
            model.weight.mul_(2.0)
        return model, None, {"epochs": ctx.parameter("epochs")}

    def evaluate(ctx):
        assert ctx.round == 3 and ctx.dataset_path("digits").endswith("data")
        return {"accuracy": 0.5}
"""


def test_function_mode_trains_and_evaluates(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    global_weights = linear_weights()
    sha = coordinator.publish(global_weights)

    code, result = _run(tmp_path, coordinator, FUNCTIONS, mode="function", model_sha256=sha)
    assert code == 0, result
    assert result["num_samples"] == 600 and result["metrics"] == {"epochs": 1.0}
    np.testing.assert_allclose(
        coordinator.uploads[0].weights()["weight"], global_weights["weight"], rtol=1e-6
    )

    code, result = _run(tmp_path, coordinator, FUNCTIONS, mode="function", kind="evaluate", model_sha256=sha)
    assert code == 0, result
    assert coordinator.uploads[1].payload == b"" and result["metrics"] == {"accuracy": 0.5}


def test_function_mode_without_the_kinds_function_fails(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    code, result = _run(tmp_path, coordinator, FUNCTIONS, mode="function", kind="init")

    assert code != 0 and "has no function init(ctx)" in str(result["reason"])


def test_python_dash_m_entry_prints_usage_without_a_task_dir() -> None:
    from task_executor.__main__ import main

    assert main([]) == 2
