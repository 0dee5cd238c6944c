"""What the task manager takes from an offer on the wire: the plan and a small model ride along."""

from __future__ import annotations

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
