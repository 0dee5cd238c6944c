"""The examples work as documented: data layout, job spec, and FedAvg that learns.

The PyTorch simulation is the acceptance check the coordinator relies on:
three IID clients with the example's defaults reach 0.90 held-out accuracy
within five rounds.  It runs the example's own ``train.py`` through the
executor's code path (``execute``), so it also covers the SDK end to end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from examples.pytorch_digits.data import write_splits
from examples.pytorch_digits.simulate import simulate
from libs.jobspec import parse_spec_text, validate_spec
from task_executor.runner import run_task
from task_executor.settings import ExecutorSettings
from tests.fixtures.pki import TestPki
from tests.unit.task_executor.fake_coordinator import FakeCoordinator, serve_fake
from tests.unit.task_executor.tasks import read_result, task_json, write_task

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    # On two shared cores, torch's spinning worker threads make a small model many times slower.
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_data_writes_plain_arrays_per_client_and_a_common_heldout_set(tmp_path: Path) -> None:
    shares = write_splits(tmp_path, clients=3, split="noniid", seed=1)

    assert sorted(shares) == ["client-0", "client-1", "client-2"]
    heldout = np.load(tmp_path / "heldout" / "test.npz")
    assert heldout["x"].dtype == np.float32 and heldout["x"].shape[1] == 64 and heldout["x"].max() <= 1.0
    for name, info in shares.items():
        with np.load(tmp_path / name / "train.npz") as train, np.load(tmp_path / name / "test.npz") as test:
            assert (len(train["y"]), len(test["y"])) == (info["train"], info["test"])
            assert train["y"].dtype == np.int64
    # label skew: each client's label mix is far from uniform (an IID share is within about 0.07)
    for info in shares.values():
        mix = np.asarray(info["labels"]) / sum(info["labels"])
        assert 0.5 * np.abs(mix - 0.1).sum() > 0.2


@pytest.mark.parametrize("example", ["pytorch_digits", "keras_digits"])
def test_job_specs_are_valid_jobs(example: str) -> None:
    spec = validate_spec(parse_spec_text((EXAMPLES / example / "job.yaml").read_text()))
    assert (spec["rounds"], spec["clientsPerRound"], spec["minClients"], spec["evaluateEvery"]) == (
        5,
        3,
        2,
        1,
    )
    assert spec["datasets"] == ["digits"]


def test_pytorch_fedavg_of_three_iid_clients_reaches_90_percent_in_five_rounds(
    one_torch_thread: None,
) -> None:
    reports = simulate(EXAMPLES / "pytorch_digits" / "train.py", "pytorch", clients=3, rounds=5, split="iid")

    assert reports[-1].heldout_accuracy >= 0.90, reports
    assert reports[-1].train_loss < reports[0].train_loss


def test_pytorch_function_mode_gives_the_script_modes_numbers(one_torch_thread: None) -> None:
    script = simulate(EXAMPLES / "pytorch_digits" / "train.py", "pytorch", rounds=1)
    function = simulate(EXAMPLES / "pytorch_digits" / "function.py", "pytorch", mode="function", rounds=1)

    assert script == function


def test_keras_example_trains_against_a_global_model_named_by_another_process(
    tmp_path: Path, test_pki: TestPki
) -> None:
    keras = pytest.importorskip("keras")
    from libs.weights.frameworks import from_keras_model

    write_splits(tmp_path / "data", clients=1, split="iid", seed=0)
    model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(128), keras.layers.Dense(10)])
    # Keras layer names come from a per-process counter: publish under names this process never made.
    global_weights = {
        f"{name.partition('/')[0]}/elsewhere_7/{name.rpartition('/')[2]}": array
        for name, array in from_keras_model(model).items()
    }
    fake = FakeCoordinator()
    server = serve_fake(fake, test_pki)
    try:
        sha = fake.publish(global_weights)
        task = task_json(
            script=EXAMPLES / "keras_digits" / "train.py",
            endpoint=server.endpoint,
            runtime="tensorflow",
            model_sha256=sha,
            datasets={"digits": str(tmp_path / "data" / "client-0")},
        )
        task["entry"]["working_dir"] = str(tmp_path)
        code = run_task(write_task(tmp_path / "task", task), ExecutorSettings(**fake.client_wire))
    finally:
        server.stop()

    result = read_result(tmp_path / "task")
    assert code == 0, result
    [upload] = fake.uploads
    delta = upload.weights()
    assert list(delta) == sorted(global_weights) and upload.header.num_samples == 1149
    assert all(delta[name].shape == array.shape for name, array in global_weights.items())
    assert np.abs(delta[sorted(delta)[0]]).max() > 0 and result["metrics"]["loss"] > 0
