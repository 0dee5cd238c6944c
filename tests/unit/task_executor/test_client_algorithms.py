"""The client side of the job's algorithm, through the runner against a fake coordinator (PyTorch).

FedProx and SCAFFOLD change the gradients of the user's own loop with one SDK
call; SCAFFOLD's control variates live in the job's state folder and travel
as attachments; local DP noises the delta and counts uploads; broadcast files
reach the script.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from libs.aggregation.attachments import (
    CONTROL_DELTA,
    FILE,
    SERVER_CONTROL,
    file_tensor,
    join,
    split,
)
from libs.privacy.local import local_accountant
from libs.tasks import AlgorithmSettings, InvalidTask, LocalDp
from libs.weights.tensors import WeightMap
from task_executor.client_algorithms import CONTROL_FILE
from task_executor.execution import execute
from task_executor.privacy import LEDGER
from task_executor.runner import run_task
from task_executor.settings import ExecutorSettings
from task_executor.task import parse_task
from tests.fixtures.pki import TestPki
from tests.unit.task_executor.fake_coordinator import FakeCoordinator, serve_fake
from tests.unit.task_executor.tasks import linear_weights, read_result, task_json, write_script, write_task

torch = pytest.importorskip("torch")


def settings(coordinator: FakeCoordinator) -> ExecutorSettings:
    """An executor's settings with client c1's certificate, to talk to ``coordinator`` over mutual TLS."""
    return ExecutorSettings(chunk_bytes=4096, **coordinator.client_wire)


# One SGD step (lr 1) on a loss whose gradient is 0: only the proximal term moves the weights back.
FEDPROX_SCRIPT = """
    import torch
    import nsfl

    model = torch.nn.Linear(4, 2)
    nsfl.load_weights(model)
    prox = nsfl.fedprox(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    optimizer.zero_grad()
    (model(torch.ones(1, 4)).sum() * 0.0).backward()
    optimizer.step()
    nsfl.commit_weights(model, num_samples=5)
    nsfl.commit_metrics({"penalty": prox.penalty()})
"""

# Two SGD steps (lr 0.1) on sum(model(x)) with x = ones: the raw gradient is 1 for every weight and bias.
SCAFFOLD_SCRIPT = """
    import torch
    import nsfl

    model = torch.nn.Linear(4, 2)
    nsfl.load_weights(model)
    on = nsfl.scaffold(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.ones(1, 4)).sum().backward()
        optimizer.step()
    nsfl.commit_weights(model, num_samples=5)
    nsfl.commit_metrics({"on": float(on)})
"""

PLAIN_SCRIPT = """
    import torch
    import nsfl

    model = torch.nn.Linear(4, 2)
    nsfl.load_weights(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    nsfl.commit_weights(model, num_samples=5)
"""

BROADCAST_SCRIPT = """
    import nsfl

    text = nsfl.get_broadcast_file("vocab.txt").decode()
    nsfl.commit_metrics({"words": len(text.split())})
    nsfl.get_broadcast_file("missing.txt")
"""


@pytest.fixture
def coordinator(test_pki: TestPki) -> Iterator[FakeCoordinator]:
    fake = FakeCoordinator()
    server = serve_fake(fake, test_pki)
    try:
        yield fake
    finally:
        server.stop()


def client_settings(**settings: Any) -> dict[str, Any]:
    """The fields of a task.json whose job asks ``settings`` of its clients (its ``algorithm`` object)."""
    return {"parameters": {"epochs": 1}, "algorithm": settings}


def run(
    tmp_path: Path,
    coordinator: FakeCoordinator,
    source: str,
    published: WeightMap,
    *,
    name: str = "task",
    **task: Any,
) -> tuple[int, dict[str, Any]]:
    script = write_script(tmp_path, source)
    sha = coordinator.publish(published)
    task_dir = write_task(
        tmp_path / name, task_json(script=script, endpoint=coordinator.endpoint, model_sha256=sha, **task)
    )
    code = run_task(task_dir, settings(coordinator))
    return code, read_result(task_dir)


def uploaded(
    coordinator: FakeCoordinator,
) -> tuple[WeightMap, dict[str, dict[str, np.ndarray]], dict[str, float]]:
    upload = coordinator.uploads[-1]
    delta, attachments = split(upload.weights())
    return delta, attachments, dict(upload.header.metrics)


def test_fedprox_adds_mu_times_the_distance_to_the_global_model_to_every_gradient(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    code, result = run(
        tmp_path,
        coordinator,
        FEDPROX_SCRIPT,
        linear_weights(),
        **client_settings(aggregation="fedprox", fedprox_mu=0.25),
    )
    assert code == 0, result
    delta, attachments, metrics = uploaded(coordinator)
    np.testing.assert_allclose(
        delta["weight"], 1.0 - 0.25, rtol=1e-6
    )  # w0 + 1, then minus lr * mu * (w - w0)
    np.testing.assert_allclose(delta["bias"], 0.0)
    assert attachments == {} and metrics["fedprox/mu"] == 0.25
    assert metrics["penalty"] == pytest.approx(0.25 / 2 * 8 * 0.75**2)


def test_fedprox_is_a_no_op_when_the_job_does_not_ask_for_it(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    code, result = run(tmp_path, coordinator, FEDPROX_SCRIPT, linear_weights())
    assert code == 0, result
    delta, _, metrics = uploaded(coordinator)
    np.testing.assert_allclose(delta["weight"], 1.0, rtol=1e-6)
    assert "fedprox/mu" not in metrics and metrics["penalty"] == 0.0


def test_a_fedprox_job_fails_a_script_that_never_opted_in(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    code, result = run(
        tmp_path,
        coordinator,
        PLAIN_SCRIPT,
        linear_weights(),
        **client_settings(aggregation="fedprox", fedprox_mu=0.1),
    )
    assert code != 0 and "call nsfl.fedprox(model)" in result["reason"]
    assert coordinator.uploads == []


def scaffold_model(c: float) -> WeightMap:
    model = linear_weights()
    control = {name: np.full_like(array, c) for name, array in model.items()}
    return join(model, {SERVER_CONTROL: control})


def test_scaffold_corrects_gradients_uploads_delta_c_and_keeps_c_i_in_the_job_state_folder(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    state = tmp_path / "jobs" / "ns-job" / "state"
    settings = client_settings(aggregation="scaffold", scaffold_run="run-1")
    code, result = run(
        tmp_path, coordinator, SCAFFOLD_SCRIPT, scaffold_model(0.5), state_dir=str(state), **settings
    )
    assert code == 0, result
    delta, attachments, metrics = uploaded(coordinator)
    # two steps of lr 0.1 on gradient 1 + (c - c_i) = 1.5
    np.testing.assert_allclose(delta["weight"], -0.3, rtol=1e-5)
    np.testing.assert_allclose(attachments[CONTROL_DELTA]["weight"], 1.0)  # c_i+ = mean raw gradient, c_i = 0
    assert metrics["scaffold/steps"] == 2 and (state / CONTROL_FILE).exists()

    # The next round starts from the kept c_i = 1: the correction is c - c_i = -0.5, Delta c_i = 0.
    code, result = run(
        tmp_path,
        coordinator,
        SCAFFOLD_SCRIPT,
        scaffold_model(0.5),
        name="again",
        state_dir=str(state),
        **settings,
    )
    assert code == 0, result
    delta, attachments, _ = uploaded(coordinator)
    np.testing.assert_allclose(delta["weight"], -0.1, rtol=1e-5)
    np.testing.assert_allclose(attachments[CONTROL_DELTA]["weight"], 0.0, atol=1e-6)


def test_a_rejected_scaffold_update_leaves_c_i_as_it_was(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    state = tmp_path / "state"
    coordinator.verdict = (False, "late update")
    code, _ = run(
        tmp_path,
        coordinator,
        SCAFFOLD_SCRIPT,
        scaffold_model(0.0),
        state_dir=str(state),
        **client_settings(aggregation="scaffold", scaffold_run="run-1"),
    )
    assert code != 0 and not (state / CONTROL_FILE).exists()


def test_a_new_scaffold_run_starts_the_client_from_zero(tmp_path: Path, coordinator: FakeCoordinator) -> None:
    state = tmp_path / "state"
    for name, run_id in (("first", "run-1"), ("second", "run-2")):
        code, result = run(
            tmp_path,
            coordinator,
            SCAFFOLD_SCRIPT,
            scaffold_model(0.0),
            name=name,
            state_dir=str(state),
            **client_settings(aggregation="scaffold", scaffold_run=run_id),
        )
        assert code == 0, result
        _, attachments, _ = uploaded(coordinator)
        np.testing.assert_allclose(attachments[CONTROL_DELTA]["bias"], 1.0)  # c_i was 0 both times


def test_scaffold_needs_the_state_folder_and_the_script_opt_in(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    settings = client_settings(aggregation="scaffold", scaffold_run="r")
    code, result = run(tmp_path, coordinator, SCAFFOLD_SCRIPT, scaffold_model(0.0), **settings)
    assert code != 0 and "names no state_dir" in result["reason"]
    code, result = run(
        tmp_path,
        coordinator,
        PLAIN_SCRIPT,
        scaffold_model(0.0),
        name="plain",
        state_dir=str(tmp_path / "state"),
        **settings,
    )
    assert code != 0 and "call nsfl.scaffold(model)" in result["reason"]


def test_local_dp_clips_and_noises_the_delta_and_counts_every_upload(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    state = tmp_path / "state"
    dp = {"clip_norm": 0.5, "noise_multiplier": 0.1, "target_delta": 1e-5}
    for name in ("first", "second"):
        code, result = run(
            tmp_path,
            coordinator,
            PLAIN_SCRIPT,
            linear_weights(),
            name=name,
            state_dir=str(state),
            **client_settings(aggregation="fedavg", local_dp=dp),
        )
        assert code == 0, result
    delta, _, metrics = uploaded(coordinator)
    noise_free_norm = float(np.sqrt(8.0))  # +1 on the 8 weights
    assert metrics["privacy/update_norm"] == pytest.approx(noise_free_norm, rel=1e-6)
    assert metrics["privacy/clipped"] == 1.0 and metrics["privacy/uploads"] == 2
    assert metrics["privacy/epsilon"] == pytest.approx(local_accountant(0.1, 1e-5).epsilon_after(2))
    clipped = 0.5 / noise_free_norm
    assert not np.allclose(delta["weight"], clipped)  # noise was added
    assert abs(float(np.mean(delta["weight"])) - clipped) < 0.2  # around the clipped value (sd 0.05)
    assert (state / LEDGER).exists()


def test_broadcast_files_reach_the_script_and_a_missing_one_is_a_clear_error(
    tmp_path: Path, coordinator: FakeCoordinator
) -> None:
    published = join(linear_weights(), {FILE: {"vocab.txt": file_tensor(b"alpha beta gamma")}})
    code, result = run(tmp_path, coordinator, BROADCAST_SCRIPT, published, kind="evaluate")
    assert code != 0
    assert "no broadcast file 'missing.txt'" in result["reason"] and "vocab.txt" in result["reason"]


def test_the_sdk_calls_do_nothing_offline_where_no_job_settings_exist(tmp_path: Path) -> None:
    script = write_script(tmp_path, FEDPROX_SCRIPT)
    spec = parse_task(
        task_json(
            script=script,
            endpoint="offline",
            model_sha256="0" * 64,
            **client_settings(aggregation="fedprox", fedprox_mu=0.25),
        )
    )
    outcome = execute(spec, linear_weights(), cache={})
    assert outcome.weights is not None
    np.testing.assert_allclose(outcome.weights["weight"] - linear_weights()["weight"], 1.0, rtol=1e-6)


def test_the_algorithm_object_of_task_json_is_read_into_typed_settings_apart_from_the_parameters(
    tmp_path: Path,
) -> None:
    raw = task_json(
        script=tmp_path / "train.py",
        endpoint="offline",
        model_sha256="0" * 64,
        **client_settings(
            aggregation="scaffold", scaffold_run="x", local_dp={"clip_norm": 1.0, "noise_multiplier": 2.0}
        ),
    )
    spec = parse_task(raw)
    assert spec.algorithm == AlgorithmSettings(
        aggregation="scaffold", scaffold_run="x", local_dp=LocalDp(clip_norm=1.0, noise_multiplier=2.0)
    )
    assert spec.parameters == {"epochs": 1}
    assert parse_task({**raw, "algorithm": None}).algorithm == AlgorithmSettings()
    with pytest.raises(InvalidTask, match="local DP settings are out of range"):
        parse_task({**raw, "algorithm": {"local_dp": {"clip_norm": 0, "noise_multiplier": 1.0}}})
    with pytest.raises(InvalidTask, match="algorithm.'fedprox_mu' must be int or float"):
        parse_task({**raw, "algorithm": {"fedprox_mu": "much"}})


def test_task_json_state_dir_must_be_absolute(tmp_path: Path) -> None:
    script = write_script(tmp_path, PLAIN_SCRIPT)
    assert (
        parse_task(
            task_json(script=script, endpoint="x", model_sha256="0" * 64, state_dir=str(tmp_path))
        ).state_dir
        == tmp_path
    )
    with pytest.raises(Exception, match="state_dir must be an absolute path"):
        parse_task(task_json(script=script, endpoint="x", model_sha256="0" * 64, state_dir="relative/state"))
