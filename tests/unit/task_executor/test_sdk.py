"""The ``nsfl`` SDK contract: what a user script may call, and the errors it gets when it calls wrongly."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from task_executor import sdk
from task_executor.errors import NoActiveTask, SdkError, UnknownDataset
from task_executor.session import TaskSession, activated
from task_executor.task import TaskSpec, parse_task
from tests.unit.task_executor.tasks import linear_weights, task_json

torch = pytest.importorskip("torch")


def _spec(kind: str = "train", **overrides: Any) -> TaskSpec:
    sha = "" if kind == "init" else "a" * 64
    return parse_task(
        task_json(script=Path("/srv/train.py"), endpoint="x:1", kind=kind, model_sha256=sha, **overrides)
    )


@pytest.fixture
def train_session() -> Iterator[TaskSession]:
    with activated(TaskSession(_spec(), linear_weights(), cache={})) as session:
        yield session


def test_sdk_calls_outside_a_task_say_so() -> None:
    with pytest.raises(NoActiveTask, match="no nsfl task is running"):
        sdk.get_dataset_path("digits")


def test_task_facts_come_from_the_task(train_session: TaskSession) -> None:
    assert (sdk.task_kind(), sdk.is_evaluation(), sdk.current_round()) == ("train", False, 3)
    assert (sdk.client_id(), sdk.job_id()) == ("c1", "ns/job")
    assert sdk.get_parameter("epochs") == 1 and sdk.get_parameter("lr", 0.1) == 0.1
    assert sdk.get_dataset_path("digits") == "/srv/data"


def test_an_unknown_dataset_is_a_key_error_listing_the_available_ones(train_session: TaskSession) -> None:
    with pytest.raises(KeyError) as caught:
        sdk.get_dataset_path("mnist")
    assert isinstance(caught.value, UnknownDataset)
    assert str(caught.value).startswith("this task has no dataset 'mnist'; available: 'digits'")


@pytest.mark.parametrize(
    ("metrics", "problem"),
    [
        ({"loss": math.nan}, "'loss' is nan, expected a finite number"),
        ({"loss": math.inf}, "'loss' is inf"),
        ({"ok": True}, "'ok' is a bool"),
        ({"loss": "0.1"}, "'loss' is a str"),
        ({"bad name": 1.0}, "name 'bad name' must match"),
        ({"x" * 65: 1.0}, "must match"),
        ([("loss", 1.0)], "must be a mapping"),
    ],
)
def test_bad_metrics_are_refused_with_the_reason(
    train_session: TaskSession, metrics: Any, problem: str
) -> None:
    with pytest.raises(SdkError, match="invalid metrics|must be a mapping") as caught:
        sdk.commit_metrics(metrics)
    assert problem in str(caught.value)


def test_one_element_tensors_are_numbers_but_larger_ones_are_not(train_session: TaskSession) -> None:
    sdk.commit_metrics({"loss": torch.tensor(0.5)})
    assert train_session.outcome.metrics == {"loss": 0.5}
    with pytest.raises(SdkError, match="'losses' is a Tensor, expected a real number"):
        sdk.commit_metrics({"losses": torch.tensor([0.5, 0.25])})


def test_metrics_merge_accept_numpy_numbers_and_cap_at_64(train_session: TaskSession) -> None:
    sdk.commit_metrics({"loss": np.float32(0.5), "step": np.int64(3)})
    sdk.commit_metrics({"loss": 0.25, "val/acc:top-1": 0.9})
    assert train_session.outcome.metrics == {"loss": 0.25, "step": 3.0, "val/acc:top-1": 0.9}
    with pytest.raises(SdkError, match="at most 64 metrics"):
        sdk.commit_metrics({f"m{i}": float(i) for i in range(62)})


def test_commit_before_load_is_refused(train_session: TaskSession) -> None:
    with pytest.raises(SdkError, match=r"call nsfl.load_weights\(model\) before nsfl.commit_weights"):
        sdk.commit_weights(torch.nn.Linear(4, 2))


def test_load_then_commit_snapshots_the_model(train_session: TaskSession) -> None:
    model = torch.nn.Linear(4, 2)
    assert sdk.load_weights(model) is True
    np.testing.assert_array_equal(model.weight.detach().numpy(), linear_weights()["weight"])
    sdk.commit_weights(model, num_samples=5)
    with torch.no_grad():
        model.weight.add_(1.0)  # training after the commit does not change what was committed
    committed = train_session.outcome.weights
    assert committed is not None and train_session.outcome.num_samples == 5
    np.testing.assert_array_equal(committed["weight"], linear_weights()["weight"])


@pytest.mark.parametrize("count", [0, -1, 2.5, True, "10"])
def test_num_samples_must_be_a_positive_integer(train_session: TaskSession, count: Any) -> None:
    model = torch.nn.Linear(4, 2)
    sdk.load_weights(model)
    with pytest.raises(SdkError, match="num_samples must be a positive integer"):
        sdk.commit_weights(model, num_samples=count)


def test_without_declared_samples_the_count_must_be_given() -> None:
    with activated(TaskSession(_spec(dataset_samples={}), linear_weights(), cache={})):
        model = torch.nn.Linear(4, 2)
        sdk.load_weights(model)
        with pytest.raises(SdkError, match="pass num_samples= explicitly"):
            sdk.commit_weights(model)


def test_a_model_that_does_not_fit_the_global_weights_is_named(train_session: TaskSession) -> None:
    with pytest.raises(Exception, match="wrong shape"):
        sdk.load_weights(torch.nn.Linear(3, 2))


def test_an_object_that_is_no_model_is_refused(train_session: TaskSession) -> None:
    with pytest.raises(SdkError, match="neither a torch.nn.Module nor a keras.Model"):
        sdk.load_weights({"weight": np.zeros(3)})


def test_a_model_of_another_framework_than_the_job_is_refused() -> None:
    with activated(TaskSession(_spec(runtime="tensorflow"), linear_weights(), cache={})):
        with pytest.raises(
            SdkError, match="the job's runtime is tensorflow but the model is a pytorch model"
        ):
            sdk.load_weights(torch.nn.Linear(4, 2))


def test_commit_weights_in_an_evaluation_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with activated(TaskSession(_spec("evaluate"), linear_weights(), cache={})) as session:
        model = torch.nn.Linear(4, 2)
        sdk.load_weights(model)
        sdk.commit_weights(model)
    assert session.outcome.weights is None and "evaluation task uploads metrics only" in caplog.text


def test_cache_is_one_dict_shared_with_sessions() -> None:
    assert sdk.cache is TaskSession(_spec(), None).cache
