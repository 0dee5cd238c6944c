"""FedProx and SCAFFOLD maths against hand-computed values from their papers' equations."""

from __future__ import annotations

import numpy as np
import pytest

from libs.aggregation.client_side import (
    prox_gradient,
    prox_penalty,
    scaffold_client_control,
    scaffold_client_deltas,
    scaffold_corrected_gradient,
    scaffold_server_update,
    zero_control,
)
from libs.errors import InvalidWeights, ValidationFailed


def one(*values: float, dtype: type[np.floating] = np.float64) -> dict[str, np.ndarray]:
    return {"x": np.array(values, dtype=dtype)}


def test_prox_gradient_is_mu_times_the_distance_to_the_global_model() -> None:
    # mu (w - w_g) = 0.1 * ([1, 2] - [0.5, 3]) = [0.05, -0.1]
    result = prox_gradient(one(1, 2), one(0.5, 3), mu=0.1)
    np.testing.assert_allclose(result["x"], [0.05, -0.1], rtol=1e-15)


def test_prox_penalty_is_half_mu_times_the_squared_distance() -> None:
    # (0.1 / 2) * (0.5^2 + 1^2) = 0.0625
    assert prox_penalty(one(1, 2), one(0.5, 3), mu=0.1) == pytest.approx(0.0625, rel=1e-15)


def test_prox_with_zero_mu_is_plain_fedavg_training() -> None:
    np.testing.assert_array_equal(prox_gradient(one(1, 2), one(0.5, 3), mu=0)["x"], [0, 0])
    assert prox_penalty(one(1, 2), one(0.5, 3), mu=0) == 0


def test_prox_keeps_the_model_dtype() -> None:
    result = prox_gradient(one(1, 2, dtype=np.float16), one(0, 0, dtype=np.float16), mu=0.5)
    assert result["x"].dtype == np.float16
    np.testing.assert_array_equal(result["x"], np.array([0.5, 1.0], np.float16))


@pytest.mark.parametrize("mu", [-0.1, float("nan"), True])
def test_mu_must_be_a_non_negative_number(mu: float) -> None:
    with pytest.raises(ValidationFailed, match="mu"):
        prox_gradient(one(1), one(1), mu)


def test_prox_refuses_mismatched_models() -> None:
    with pytest.raises(InvalidWeights, match="global model: tensor 'x' has shape"):
        prox_penalty(one(1, 2), one(1), mu=0.1)


def test_scaffold_corrected_gradient_is_g_minus_ci_plus_c() -> None:
    # eq. (3): g - c_i + c = 0.5 - 0.1 + 0.3 = 0.7
    result = scaffold_corrected_gradient(one(0.5), one(0.1), one(0.3))
    np.testing.assert_allclose(result["x"], [0.7], rtol=1e-15)


def test_scaffold_option_two_control_variate() -> None:
    # eq. (4) option II: c_i+ = c_i - c + (x - y_i) / (K eta_l) = 0.1 - 0.3 + (1.0 - 0.6) / (4 * 0.05) = 1.8
    result = scaffold_client_control(
        one(0.1), one(0.3), one(1.0), one(0.6), local_steps=4, local_learning_rate=0.05
    )
    np.testing.assert_allclose(result["x"], [1.8], rtol=1e-14)


def test_scaffold_client_uploads_model_and_control_deltas() -> None:
    # Delta y = y_i - x = 0.6 - 1.0 = -0.4; Delta c = c_i+ - c_i = 1.8 - 0.1 = 1.7
    deltas = scaffold_client_deltas(one(1.0), one(0.6), one(0.1), one(1.8))
    np.testing.assert_allclose(deltas.model["x"], [-0.4], rtol=1e-14)
    np.testing.assert_allclose(deltas.control["x"], [1.7], rtol=1e-14)


def test_scaffold_server_update() -> None:
    # x + eta_g * mean(Dy) = 1.0 + 1.0 * -0.4 = 0.6; c + |S|/N * mean(Dc) = 0.3 + 2/10 * 1.7 = 0.64
    state = scaffold_server_update(
        one(1.0), one(0.3), one(-0.4), one(1.7), global_learning_rate=1.0, sampled_clients=2, total_clients=10
    )
    np.testing.assert_allclose(state.weights["x"], [0.6], rtol=1e-14)
    np.testing.assert_allclose(state.control["x"], [0.64], rtol=1e-14)


def test_one_scaffold_round_end_to_end_with_two_of_four_clients() -> None:
    # Two sampled clients, both starting from c_i = c = 0, K = 2 steps of eta_l = 0.5.
    x, c = one(1.0, 1.0), zero_control(one(1.0, 1.0))
    local = [one(0.0, 2.0), one(2.0, 2.0)]
    uploads = []
    for y in local:
        c_new = scaffold_client_control(c, c, x, y, local_steps=2, local_learning_rate=0.5)
        uploads.append(scaffold_client_deltas(x, y, c, c_new))
    # c_i+ = (x - y) / 1 -> [1, -1] and [-1, -1]; Dy = [-1, 1] and [1, 1]
    mean_dy = {"x": (uploads[0].model["x"] + uploads[1].model["x"]) / 2}  # [0, 1]
    mean_dc = {"x": (uploads[0].control["x"] + uploads[1].control["x"]) / 2}  # [0, -1]
    state = scaffold_server_update(
        x, c, mean_dy, mean_dc, global_learning_rate=1.0, sampled_clients=2, total_clients=4
    )
    np.testing.assert_allclose(state.weights["x"], [1.0, 2.0])
    np.testing.assert_allclose(state.control["x"], [0.0, -0.5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"local_steps": 0, "local_learning_rate": 0.1}, "local_steps"),
        ({"local_steps": 1.5, "local_learning_rate": 0.1}, "local_steps"),
        ({"local_steps": 1, "local_learning_rate": 0.0}, "local_learning_rate"),
    ],
)
def test_scaffold_client_parameters_are_checked(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        scaffold_client_control(one(0), one(0), one(0), one(0), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sampled", "total", "rate", "message"),
    [(0, 4, 1.0, "sampled_clients"), (5, 4, 1.0, "exceeds"), (1, 4, 0.0, "global_learning_rate")],
)
def test_scaffold_server_parameters_are_checked(sampled: int, total: int, rate: float, message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        scaffold_server_update(
            one(0),
            one(0),
            one(0),
            one(0),
            global_learning_rate=rate,
            sampled_clients=sampled,
            total_clients=total,
        )


def test_scaffold_refuses_non_finite_control_variates() -> None:
    with pytest.raises(InvalidWeights, match="server control: tensor 'x' has NaN"):
        scaffold_corrected_gradient(one(0.5), one(0.1), one(float("nan")))
