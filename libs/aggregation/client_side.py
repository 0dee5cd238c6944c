"""The maths of algorithms that change local training: FedProx and SCAFFOLD.

Pure functions on weight maps, used by the SDK inside a client's training
loop and by the coordinator; they never touch a framework (the runtime
adapters convert tensors to and from numpy).

FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous
Networks", MLSys, eq. (2)): each client minimises
``h_k(w) = F_k(w) + (mu/2) ||w - w^t||^2``, so the local gradient gains the
term ``mu (w - w^t)`` (:func:`prox_gradient`) and the loss the penalty
(:func:`prox_penalty`).  The server side is plain FedAvg.  The paper tunes
mu over {0.001, 0.01, 0.1, 1} per dataset; the registry defaults to 0.01.

SCAFFOLD (Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled
Averaging for Federated Learning", ICML, Algorithm 1), with server control
variate c, client control variate c_i, global model x, and the client's
model y_i after K local steps of size eta_l:

* local step (eq. (3)):       y_i <- y_i - eta_l (g_i(y_i) - c_i + c)
  (:func:`scaffold_corrected_gradient` returns ``g - c_i + c``);
* new client variate, option II (eq. (4)):
                              c_i+ = c_i - c + (x - y_i) / (K eta_l)
  (:func:`scaffold_client_control`);
* what the client uploads:    Delta y_i = y_i - x,  Delta c_i = c_i+ - c_i
  (:func:`scaffold_client_deltas`);
* server (Algorithm 1, lines 16-17), with S the sampled clients of N:
                              x <- x + eta_g * mean(Delta y)
                              c <- c + (|S| / N) * mean(Delta c)
  (:func:`scaffold_server_update`; the means are unweighted in the paper).

Assumptions: all maps share the model's layout and are finite; the variates
start at zero (:func:`zero_control`); K counts the local steps actually
taken.  Arithmetic runs in at least float32 and results return in the
model's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from libs.aggregation.types import WeightMap, working_dtype
from libs.aggregation.validation import check_finite, check_matches, check_model
from libs.errors import InvalidWeights, ValidationFailed

Weights = Mapping[str, np.ndarray]


def _check_same(first: Weights, others: Mapping[str, Weights]) -> None:
    """``first`` and every map in ``others`` (by role name) share one layout and are finite."""
    layout = check_model(first, what="model")
    check_finite(first, what="model", error=InvalidWeights)
    for role, weights in others.items():
        check_matches(layout, weights, what=role, error=InvalidWeights)
        check_finite(weights, what=role, error=InvalidWeights)


def _number(label: str, value: object, *, minimum: float, inclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValidationFailed(f"{label} must be a finite number, got {value!r}")
    number = float(value)
    if number < minimum or (number == minimum and not inclusive):
        raise ValidationFailed(f"{label} must be {'>=' if inclusive else '>'} {minimum:g}, got {value!r}")
    return number


def _cast(array: np.ndarray, like: np.ndarray) -> np.ndarray:
    return array.astype(like.dtype, copy=False)


def _work(array: np.ndarray) -> np.ndarray:
    return array.astype(working_dtype(array.dtype), copy=False)


def prox_gradient(weights: Weights, global_weights: Weights, mu: float) -> WeightMap:
    """FedProx's extra gradient term ``mu * (w - w_global)``, per tensor."""
    mu = _number("mu", mu, minimum=0.0, inclusive=True)
    _check_same(weights, {"global model": global_weights})
    return {
        name: _cast((_work(w) - global_weights[name]) * working_dtype(w.dtype).type(mu), w)
        for name, w in weights.items()
    }


def prox_penalty(weights: Weights, global_weights: Weights, mu: float) -> float:
    """FedProx's proximal loss term ``(mu / 2) * ||w - w_global||^2``, in float64."""
    mu = _number("mu", mu, minimum=0.0, inclusive=True)
    _check_same(weights, {"global model": global_weights})
    total = 0.0
    for name, w in weights.items():
        difference = (w.astype(np.float64) - global_weights[name]).reshape(-1)
        total += float(np.dot(difference, difference))
    return mu / 2 * total


def zero_control(model: Weights) -> WeightMap:
    """An all-zero control variate shaped like ``model`` (SCAFFOLD's c and c_i start here)."""
    check_model(model)
    return {name: np.zeros_like(array) for name, array in model.items()}


def scaffold_corrected_gradient(
    gradient: Weights, client_control: Weights, server_control: Weights
) -> WeightMap:
    """The drift-corrected local gradient ``g - c_i + c`` of SCAFFOLD eq. (3)."""
    _check_same(gradient, {"client control": client_control, "server control": server_control})
    return {
        name: _cast(_work(g) - client_control[name] + server_control[name], g) for name, g in gradient.items()
    }


def scaffold_client_control(
    client_control: Weights,
    server_control: Weights,
    global_weights: Weights,
    local_weights: Weights,
    *,
    local_steps: int,
    local_learning_rate: float,
) -> WeightMap:
    """The client's new control variate, option II: ``c_i - c + (x - y_i) / (K * eta_l)``."""
    if isinstance(local_steps, bool) or not isinstance(local_steps, Integral) or local_steps < 1:
        raise ValidationFailed(f"local_steps must be a whole number >= 1, got {local_steps!r}")
    rate = _number("local_learning_rate", local_learning_rate, minimum=0.0, inclusive=False)
    _check_same(
        client_control,
        {"server control": server_control, "global model": global_weights, "local model": local_weights},
    )
    result: WeightMap = {}
    for name, c_i in client_control.items():
        kind = working_dtype(c_i.dtype).type
        drift = (_work(global_weights[name]) - local_weights[name]) / kind(int(local_steps) * rate)
        result[name] = _cast(_work(c_i) - server_control[name] + drift, c_i)
    return result


class ScaffoldDeltas(NamedTuple):
    """What a SCAFFOLD client uploads: its model delta and its control-variate delta."""

    model: WeightMap  # Delta y_i = y_i - x
    control: WeightMap  # Delta c_i = c_i+ - c_i


def scaffold_client_deltas(
    global_weights: Weights,
    local_weights: Weights,
    client_control: Weights,
    new_client_control: Weights,
) -> ScaffoldDeltas:
    """``(y_i - x, c_i+ - c_i)``, the two deltas a SCAFFOLD client uploads."""
    _check_same(
        global_weights,
        {
            "local model": local_weights,
            "client control": client_control,
            "new client control": new_client_control,
        },
    )
    model = {name: _cast(_work(local_weights[name]) - x, x) for name, x in global_weights.items()}
    control = {
        name: _cast(_work(new_client_control[name]) - c_i, c_i) for name, c_i in client_control.items()
    }
    return ScaffoldDeltas(model, control)


class ScaffoldServerState(NamedTuple):
    """The server's SCAFFOLD state after a round: the global model x and the control variate c."""

    weights: WeightMap
    control: WeightMap


def scaffold_server_update(
    global_weights: Weights,
    server_control: Weights,
    mean_model_delta: Weights,
    mean_control_delta: Weights,
    *,
    global_learning_rate: float,
    sampled_clients: int,
    total_clients: int,
) -> ScaffoldServerState:
    """``x + eta_g * mean(Delta y)`` and ``c + (|S| / N) * mean(Delta c)`` (Algorithm 1, lines 16-17)."""
    rate = _number("global_learning_rate", global_learning_rate, minimum=0.0, inclusive=False)
    for label, count in (("sampled_clients", sampled_clients), ("total_clients", total_clients)):
        if isinstance(count, bool) or not isinstance(count, Integral) or count < 1:
            raise ValidationFailed(f"{label} must be a whole number >= 1, got {count!r}")
    if sampled_clients > total_clients:
        raise ValidationFailed(f"sampled_clients ({sampled_clients}) exceeds total_clients ({total_clients})")
    _check_same(
        global_weights,
        {
            "server control": server_control,
            "mean model delta": mean_model_delta,
            "mean control delta": mean_control_delta,
        },
    )
    fraction = int(sampled_clients) / int(total_clients)
    weights: WeightMap = {}
    control: WeightMap = {}
    for name, x in global_weights.items():
        kind = working_dtype(x.dtype).type
        weights[name] = _cast(_work(x) + kind(rate) * _work(mean_model_delta[name]), x)
        c = server_control[name]
        control[name] = _cast(_work(c) + kind(fraction) * _work(mean_control_delta[name]), c)
    return ScaffoldServerState(weights, control)
