"""Protobuf <-> :mod:`libs.tasks` for every hop of a task: its parameters, its algorithm settings, its round.

The coordinator writes a task's parameters and algorithm settings into the
offer (``TaskSpec.parameters``, ``TaskSpec.algorithm``) and into the
``AwaitModel`` answer of a task offered ahead; the task manager reads them from
the offer, and the executor from the answer (:func:`for_round`).  The same
functions on every side, so no hop encodes them its own way, and none as a
JSON string inside a message.

Parameters are free-form JSON values (the job spec's ``parameters``).  They
travel as ``ParameterValue``s rather than ``google.protobuf.Value``, which has
only doubles: a script reading ``epochs: 2`` gets the int 2, as the JSON of
the spec says.  A whole number beyond 64 bits travels as a double.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from libs.errors import CorruptPayload, ValidationFailed
from libs.protos import coordinator_pb2, task_pb2
from libs.tasks.document import is_sha256
from libs.tasks.spec import AlgorithmSettings, LocalDp, TaskSpec

_INT64 = range(-(1 << 63), 1 << 63)


# -- parameters ------------------------------------------------------------------------------------
def _fill(target: task_pb2.ParameterValue, value: Any) -> None:
    if value is None:
        target.null_value = True
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if value in _INT64:
            target.int_value = value
        else:
            target.number_value = float(value)
    elif isinstance(value, float):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, Mapping):
        target.map_value.SetInParent()  # an empty object is still an object
        _fill_map(target.map_value, value)
    elif isinstance(value, (list, tuple)):
        target.list_value.SetInParent()
        for item in value:
            _fill(target.list_value.values.add(), item)
    else:
        raise ValidationFailed(f"a task parameter must be a JSON value, got {type(value).__name__}")


def _fill_map(target: task_pb2.Parameters, mapping: Mapping[str, Any]) -> None:
    for key, item in mapping.items():
        _fill(target.fields[str(key)], item)


def parameters_to_proto(parameters: Mapping[str, Any]) -> task_pb2.Parameters:
    """The wire form of a task's parameters (a JSON object)."""
    message = task_pb2.Parameters()
    _fill_map(message, parameters)
    return message


def _value(message: task_pb2.ParameterValue) -> Any:
    kind = message.WhichOneof("kind")
    if kind == "map_value":
        return parameters_from_proto(message.map_value)
    if kind == "list_value":
        return [_value(item) for item in message.list_value.values]
    if kind is None or kind == "null_value":
        return None
    return getattr(message, kind)


def parameters_from_proto(message: task_pb2.Parameters) -> dict[str, Any]:
    """A task's parameters as the JSON object they were (ints stay ints)."""
    return {key: _value(item) for key, item in message.fields.items()}


# -- algorithm settings ------------------------------------------------------------------------------
def algorithm_to_proto(settings: AlgorithmSettings) -> task_pb2.AlgorithmSettings:
    message = task_pb2.AlgorithmSettings(aggregation=settings.aggregation, scaffold_run=settings.scaffold_run or "")
    if settings.fedprox_mu is not None:
        message.fedprox_mu = settings.fedprox_mu
    if settings.local_dp is not None:
        dp = settings.local_dp
        message.local_dp.CopyFrom(task_pb2.LocalDp(
            clip_norm=dp.clip_norm, noise_multiplier=dp.noise_multiplier, target_delta=dp.target_delta))
    return message


def algorithm_from_proto(message: task_pb2.AlgorithmSettings) -> AlgorithmSettings:
    """The settings; :class:`~libs.tasks.spec.InvalidTask` when local DP's are out of range."""
    dp = message.local_dp
    return AlgorithmSettings(
        aggregation=message.aggregation,
        fedprox_mu=message.fedprox_mu if message.HasField("fedprox_mu") else None,
        scaffold_run=message.scaffold_run or None,
        local_dp=LocalDp(dp.clip_norm, dp.noise_multiplier, dp.target_delta) if message.HasField("local_dp") else None,
    )


# -- a task offered ahead, once its round starts -------------------------------------------------------
def for_round(spec: TaskSpec, reply: coordinator_pb2.AwaitModelReply) -> TaskSpec:
    """``spec`` as its round offers it, from a ready ``AwaitModel`` answer: the round's model, parameters,
    algorithm settings and whether it evaluates first.  :class:`CorruptPayload` if the answer is not usable.
    """
    if not reply.ready or not is_sha256(reply.model_sha256):
        raise CorruptPayload("the coordinator's AwaitModel answer has no valid model SHA-256")
    try:
        algorithm = algorithm_from_proto(reply.algorithm) if reply.HasField("algorithm") else spec.algorithm
    except ValidationFailed as exc:
        raise CorruptPayload(f"the coordinator's AwaitModel answer has unusable settings: {exc.message}") from None
    return dataclasses.replace(
        spec,
        model_sha256=reply.model_sha256,
        parameters=parameters_from_proto(reply.parameters) if reply.HasField("parameters") else spec.parameters,
        algorithm=algorithm,
        evaluate_first=reply.evaluate_first,
        model_follows=False,
    )
