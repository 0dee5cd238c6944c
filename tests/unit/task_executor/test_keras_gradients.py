"""FedProx and SCAFFOLD for Keras: the tap inside the compiled optimiser changes what ``model.fit`` applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from libs.aggregation.attachments import CONTROL_DELTA, SERVER_CONTROL
from libs.tasks import AlgorithmSettings
from task_executor import sdk as nsfl
from task_executor.client_algorithms import ClientRound
from task_executor.errors import SdkError
from task_executor.session import TaskSession, activated
from task_executor.task import Entry, TaskSpec

keras = pytest.importorskip("keras")


def spec(settings: AlgorithmSettings, state_dir: Path | None = None) -> TaskSpec:
    return TaskSpec(
        task_id="ns/job:1:train:c1:0",
        job_id="ns/job",
        namespace="ns",
        round=1,
        attempt=0,
        kind="train",
        runtime="tensorflow",
        client_id="c1",
        coordinator_endpoint="offline",
        model_sha256="0" * 64,
        task_token="t",
        entry=Entry(Path("/x.py"), "script", Path("/")),
        algorithm=settings,
        state_dir=state_dir,
    )


def dense(optimizer: Any, loss: Any) -> Any:
    model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss=loss)
    return model


def global_weights(model: Any) -> dict[str, np.ndarray]:
    from libs.weights.frameworks import from_keras_model

    return from_keras_model(model)


X = np.ones((8, 3), np.float32)
Y = np.zeros((8, 2), np.float32)


def test_fedprox_pulls_keras_weights_back_towards_the_global_model() -> None:
    model = dense(keras.optimizers.SGD(learning_rate=0.5), lambda y, p: 0.0 * keras.ops.sum(p))
    start = global_weights(model)
    task = spec(AlgorithmSettings(aggregation="fedprox", fedprox_mu=1.0))
    algorithm = ClientRound(task, start)
    with activated(TaskSession(task, start)), algorithm.active():
        model.weights[0].assign(model.weights[0].numpy() + 1.0)
        assert nsfl.fedprox(model).mu == 1.0
        model.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    kernel = next(iter(start))
    np.testing.assert_allclose(model.weights[0].numpy() - start[kernel], 0.5, rtol=1e-6)  # 1 - lr * mu * 1
    assert "apply" not in model.optimizer.__dict__  # the tap came off with the task


def test_scaffold_records_keras_gradients_and_sends_delta_c(tmp_path: Path) -> None:
    model = dense(keras.optimizers.SGD(learning_rate=0.1), "mse")
    start = global_weights(model)
    control = {name: np.zeros_like(array) for name, array in start.items()}
    task = spec(AlgorithmSettings(aggregation="scaffold", scaffold_run="r"), tmp_path)
    algorithm = ClientRound(task, start, {SERVER_CONTROL: control})
    with activated(TaskSession(task, start)), algorithm.active():
        assert nsfl.scaffold(model)
        model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
    upload = algorithm.finish({name: np.zeros_like(array) for name, array in start.items()})
    deltas = {
        name.rpartition(f"{CONTROL_DELTA}/")[2]: array
        for name, array in upload.items()
        if CONTROL_DELTA in name
    }
    assert algorithm.metrics["scaffold/steps"] == 2 and deltas.keys() == start.keys()
    assert all(np.abs(array).sum() > 0 for array in deltas.values())


def test_the_keras_tap_needs_a_compiled_model() -> None:
    model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2)])
    start = global_weights(model)
    task = spec(AlgorithmSettings(aggregation="fedprox", fedprox_mu=0.1))
    with activated(TaskSession(task, start)), ClientRound(task, start).active():
        with pytest.raises(SdkError, match="after model.compile"):
            nsfl.fedprox(model)
