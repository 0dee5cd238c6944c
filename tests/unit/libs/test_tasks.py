"""One task type end to end (libs.tasks): task.json written and read back, the wire forms, a task's round."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.errors import CorruptPayload
from libs.protos import coordinator_pb2
from libs.tasks import AlgorithmSettings, Entry, InvalidTask, LocalDp, TaskSpec, parse_task, task_json
from libs.tasks.serde import (
    algorithm_from_proto,
    algorithm_to_proto,
    for_round,
    parameters_from_proto,
    parameters_to_proto,
)

SHA = "ab" * 32
PARAMETERS = {"epochs": 2, "lr": 0.05, "big": 1 << 40, "layers": [64, 32.5, None], "net": {"kind": "mlp", "deep": False},
              "empty": {}, "none": []}  # fmt: skip


def every_field() -> TaskSpec:
    return TaskSpec(
        task_id="ns/job:3:train:c1:0", job_id="ns/job", namespace="ns", round=3, attempt=1, kind="train",
        runtime="pytorch", client_id="c1", coordinator_endpoint="127.0.0.1:1", model_sha256=SHA, task_token="t",
        entry=Entry(Path("/s/train.py"), "function", Path("/s")), parameters=PARAMETERS,
        algorithm=AlgorithmSettings("scaffold", 0.1, "run-1", LocalDp(1.0, 0.5, 1e-6)),
        datasets={"digits": "/data"}, dataset_samples={"digits": 600}, timeout_seconds=60.0,
        deadline_unix=2e9, state_dir=Path("/w/state"), evaluate_first=True, secure_aggregation=False,
        model_file="model.safetensors", model_follows=False,
    )  # fmt: skip


def test_task_json_reads_back_as_the_task_that_wrote_it() -> None:
    spec = every_field()
    assert parse_task(task_json(spec)) == spec
    plain = TaskSpec(**{**spec.__dict__, "algorithm": AlgorithmSettings(), "secure_aggregation": None,
                        "state_dir": None, "model_file": None, "evaluate_first": False})  # fmt: skip
    document = task_json(plain)
    assert "algorithm" not in document and "state_dir" not in document and parse_task(document) == plain


def test_parameters_cross_the_wire_as_the_json_they_were_with_whole_numbers_whole() -> None:
    back = parameters_from_proto(parameters_to_proto(PARAMETERS))
    assert back == PARAMETERS and isinstance(back["epochs"], int) and isinstance(back["layers"][1], float)
    assert back["empty"] == {} and back["none"] == []
    assert parameters_from_proto(parameters_to_proto({"huge": 1 << 70}))["huge"] == float(1 << 70)


def test_algorithm_settings_cross_the_wire_and_an_unset_one_stays_unset() -> None:
    settings = AlgorithmSettings("fedprox", 0.0, None, None)
    assert algorithm_from_proto(algorithm_to_proto(settings)) == settings, "mu = 0 is not 'no mu'"
    assert algorithm_from_proto(algorithm_to_proto(AlgorithmSettings())) == AlgorithmSettings()


@pytest.mark.parametrize("dp", [(0.0, 1.0, 1e-5), (1.0, -1.0, 1e-5), (1.0, 1.0, 1.0), (float("nan"), 1.0, 1e-5)])
def test_local_dp_settings_out_of_range_are_an_invalid_task(dp: tuple[float, float, float]) -> None:
    with pytest.raises(InvalidTask, match="out of range"):
        LocalDp(*dp)


def test_a_task_offered_ahead_takes_its_round_from_the_await_model_answer() -> None:
    ahead = TaskSpec(**{**every_field().__dict__, "model_sha256": "", "model_follows": True, "model_file": None,
                        "evaluate_first": False})  # fmt: skip
    reply = coordinator_pb2.AwaitModelReply(
        ready=True, model_sha256=SHA, evaluate_first=True, parameters=parameters_to_proto({"lr": 0.25}),
        algorithm=algorithm_to_proto(AlgorithmSettings("fedprox", 0.5)))
    spec = for_round(ahead, reply)
    assert (spec.model_sha256, spec.parameters, spec.evaluate_first, spec.model_follows) == (
        SHA, {"lr": 0.25}, True, False)
    assert spec.algorithm == AlgorithmSettings("fedprox", 0.5)
    bare = for_round(ahead, coordinator_pb2.AwaitModelReply(ready=True, model_sha256=SHA))
    assert bare.parameters == ahead.parameters and bare.algorithm == ahead.algorithm, "unset: the offer's stay"


@pytest.mark.parametrize("reply", [
    coordinator_pb2.AwaitModelReply(ready=True, model_sha256="not a sha"),
    coordinator_pb2.AwaitModelReply(ready=True, model_sha256=SHA, algorithm=algorithm_to_proto(
        AlgorithmSettings()).__class__(local_dp={"clip_norm": -1.0})),
], ids=["no model SHA-256", "settings out of range"])
def test_an_unusable_await_model_answer_is_a_corrupt_payload(reply: coordinator_pb2.AwaitModelReply) -> None:
    with pytest.raises(CorruptPayload):
        for_round(every_field(), reply)
