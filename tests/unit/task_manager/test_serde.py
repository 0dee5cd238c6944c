"""What the task manager takes from an offer on the wire: the plan and a small model ride along."""

from __future__ import annotations

import dataclasses

import pytest

from libs.errors import ValidationFailed
from libs.tasks import AlgorithmSettings, LocalDp
from task_manager import serde
from tests.unit.task_manager.fakes import offer, offer_message


def test_an_offer_without_plan_or_model_leaves_the_executor_to_ask_and_download() -> None:
    parsed = serde.offer_from_proto(offer_message(offer("t-1")))
    assert parsed.secure_aggregation is None and parsed.model == b""


def test_the_plan_and_a_small_model_are_taken_from_the_offer() -> None:
    message = offer_message(offer("t-1"))
    message.secure_aggregation = False
    message.model = b"weights"
    parsed = serde.offer_from_proto(message)
    assert parsed.secure_aggregation is False and parsed.model == b"weights"
    message.secure_aggregation = True
    assert serde.offer_from_proto(message).secure_aggregation is True


def test_an_init_task_never_takes_a_model() -> None:
    message = offer_message(offer("t-1", kind="init"))
    message.model = b"weights"
    assert serde.offer_from_proto(message).model == b""


def test_a_task_offered_ahead_has_no_model_until_it_asks_for_it() -> None:
    message = offer_message(offer("t-1"))
    message.model_follows = True
    message.model = b"ignored"
    parsed = serde.offer_from_proto(message)
    assert parsed.model_follows and parsed.model == b""
    message.kind = "evaluate"
    assert not serde.offer_from_proto(message).model_follows, "only train tasks are offered ahead"


def test_parameters_and_algorithm_settings_arrive_typed_and_apart() -> None:
    parameters = {"epochs": 2, "lr": 0.5, "layers": [64, None, {"dropout": 0.1}], "name": "mlp", "flag": True}
    settings = AlgorithmSettings(aggregation="fedprox", fedprox_mu=0.25, local_dp=LocalDp(1.0, 0.5, 1e-6))
    parsed = serde.offer_from_proto(
        offer_message(dataclasses.replace(offer("t-1"), parameters=parameters, algorithm=settings))
    )
    assert parsed.parameters == parameters and isinstance(parsed.parameters["epochs"], int)
    assert parsed.algorithm == settings


def test_an_offer_whose_algorithm_settings_cannot_work_is_refused_naming_them() -> None:
    message = offer_message(offer("t-1"))
    message.spec.algorithm.local_dp.noise_multiplier = -1.0
    with pytest.raises(ValidationFailed, match="spec.algorithm: the task's local DP settings are out of range"):
        serde.offer_from_proto(message)
