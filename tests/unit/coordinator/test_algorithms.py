"""The coordinator's job algorithm: from the spec to broadcasts, round aggregation, server steps and state."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from coordinator.algorithms import JobAlgorithm
from coordinator.checkpoints import pack, unpack
from coordinator.errors import RoundFailed
from coordinator.model_state import GlobalModel
from coordinator.round_aggregation import RoundResult
from libs.aggregation.attachments import CONTROL_DELTA, SERVER_CONTROL, split
from libs.aggregation.server_optimizers import make_server_optimizer
from libs.errors import UpdateRejected, ValidationFailed
from libs.privacy import PrivacyAccountant
from libs.tasks import AlgorithmSettings, LocalDp
from libs.weights.tensors import decode
from tests.unit.coordinator.specs import stored_spec


def weights(value: float = 1.0) -> dict[str, np.ndarray]:
    return {"fc.bias": np.full(2, value, np.float32), "fc.weight": np.full((2, 3), value, np.float32)}


def job(name: str = "fedavg", params: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "name": "digits",
        "namespace": "ns",
        "rounds": 5,
        "clientsPerRound": 3,
        "minClients": 2,
        "serverLearningRate": 1.0,
        "aggregation": {"name": name, "params": params or {}},
        **spec,
    }


def algorithm(spec: dict[str, Any], seed: int = 0) -> JobAlgorithm:
    made = JobAlgorithm(stored_spec(spec), rng=np.random.default_rng(seed))
    made.prepare()
    return made


def one_round(
    made: JobAlgorithm,
    model: GlobalModel,
    updates: list[tuple[str, float, int]],
    control: float | None = None,
) -> RoundResult:
    aggregation = made.new_round(model)
    for client, value, samples in updates:
        attachments = None if control is None else {CONTROL_DELTA: weights(control)}
        aggregation.add(weights(value), samples, client_id=client, attachments=attachments)
    result: RoundResult = aggregation.result()
    return result


BASE = GlobalModel.from_weights(weights(0.0), 0)


def test_an_unknown_optimizer_key_is_refused_naming_what_the_optimizer_takes() -> None:
    with pytest.raises(ValidationFailed) as caught:
        algorithm(job("fedadam", optimizer={"lr": 0.1}))
    assert "unknown parameter 'lr'" in caught.value.message
    assert "beta1, beta2, learningRate, tau" in caught.value.message


def test_an_optimizer_key_of_another_optimizer_is_refused_too() -> None:
    with pytest.raises(ValidationFailed, match="'beta1' for aggregation fedavg"):
        algorithm(job("fedavg", optimizer={"beta1": 0.9}))


def test_a_key_set_twice_with_different_values_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="set it once"):
        algorithm(job("fedadam", {"learningRate": 0.1}, optimizer={"learningRate": 0.2}))


def test_fedadam_keeps_the_published_defaults_unless_the_job_sets_them() -> None:
    default = algorithm(job("fedadam"))
    tuned = algorithm(job("fedadam", optimizer={"learningRate": 0.03, "tau": 1e-2}))
    assert dict(default.aggregator.parameters) == {
        "learningRate": 0.01,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 1e-3,
    }
    assert tuned.aggregator.parameters["learningRate"] == 0.03 and tuned.aggregator.parameters["tau"] == 1e-2


def test_server_learning_rate_drives_fedavg_and_an_explicit_one_drives_fedadam() -> None:
    assert algorithm(job("fedavg", serverLearningRate=0.5)).aggregator.parameters["learningRate"] == 0.5
    assert algorithm(job("fedyogi", serverLearningRate=0.5)).aggregator.parameters["learningRate"] == 0.5
    assert algorithm(job("fedyogi")).aggregator.parameters["learningRate"] == 0.01


def test_fedavg_streams_the_sample_weighted_mean_and_steps_the_model() -> None:
    made = algorithm(job())
    result = one_round(made, BASE, [("a", 1.0, 1), ("b", 4.0, 3)])
    new = made.apply(BASE.weights, result)
    np.testing.assert_allclose(new["fc.weight"], np.full((2, 3), (1 * 1 + 4 * 3) / 4))
    assert result.participants == {"a": 1, "b": 3} and result.count == 2
    assert made.streams


def test_fedadam_steps_like_the_library_optimizer() -> None:
    made = algorithm(job("fedadam", optimizer={"learningRate": 0.1}))
    reference = make_server_optimizer("fedadam", {"learningRate": 0.1})
    result = one_round(made, BASE, [("a", 0.5, 10)])
    stepped, expected = made.apply(BASE.weights, result), reference.step(dict(BASE.weights), weights(0.5))
    for name in expected:
        np.testing.assert_array_equal(stepped[name], expected[name])


def test_a_plain_mean_is_applied_as_it_is_for_secure_aggregation_rounds() -> None:
    made = algorithm(job())
    aggregation = made.new_round(BASE)
    aggregation.add(weights(0.25), 30.0)  # secure aggregation hands over the unmasked mean, no client id
    assert made.apply(BASE.weights, aggregation.result())["fc.bias"][0] == 0.25
    assert made.apply(BASE.weights, weights(0.5))["fc.bias"][0] == 0.5


def test_fedprox_tells_its_clients_mu_in_their_settings_and_publishes_the_model_as_is() -> None:
    made = algorithm(job("fedprox", {"mu": 0.1}))
    model, parameters = made.broadcast(BASE, 1, {"epochs": 2})
    assert model is BASE
    assert parameters == {"epochs": 2}, "the settings never ride among the job's parameters"
    assert made.client_settings() == AlgorithmSettings(aggregation="fedprox", fedprox_mu=0.1)


def test_plain_fedavg_adds_nothing_to_the_task_parameters_and_asks_nothing_of_clients() -> None:
    made = algorithm(job())
    assert made.broadcast(BASE, 1, {"epochs": 1}) == (BASE, {"epochs": 1})
    assert made.client_settings() == AlgorithmSettings()


def test_trimmed_mean_collects_the_round_and_drops_the_extremes() -> None:
    made = algorithm(job("trimmedmean", {"trimFraction": 0.34}, minClients=3))
    result = one_round(made, BASE, [("a", 0.0, 5), ("b", 1.0, 500), ("c", 100.0, 5)])
    assert not made.streams
    np.testing.assert_array_equal(result.delta["fc.weight"], np.full((2, 3), 1.0, np.float32))


def test_a_rule_that_needs_more_updates_than_min_clients_is_refused_at_start() -> None:
    with pytest.raises(ValidationFailed, match="needs at least 3 updates per round.*minClients = 2"):
        algorithm(job("trimmedmean", {"trimFraction": 0.34}))
    with pytest.raises(ValidationFailed, match="needs at least 5"):
        algorithm(job("krum", {"byzantineClients": 1}, clientsPerRound=5, minClients=4))


def test_norm_screening_drops_an_outlier_and_a_rule_left_short_fails_only_the_round() -> None:
    made = algorithm(job("median", {"rejectNormFactor": 2.0}, minClients=2))
    result = one_round(made, BASE, [("a", 1.0, 1), ("b", 1.1, 1), ("c", 50.0, 1)])
    assert [entry["client"] for entry in result.screened] == ["c"]
    np.testing.assert_allclose(result.delta["fc.bias"], 1.05, rtol=1e-6)

    krum = algorithm(job("krum", {"byzantineClients": 0, "rejectNormFactor": 2.0}, minClients=3))
    with pytest.raises(RoundFailed, match="krum could not aggregate 2 update"):
        one_round(krum, BASE, [("a", 1.0, 1), ("b", 1.1, 1), ("c", 50.0, 1)])


def test_max_update_norm_clips_each_update_as_it_arrives() -> None:
    made = algorithm(job("fedavg", {"maxUpdateNorm": 1.0}))
    result = one_round(made, BASE, [("a", 10.0, 1)])
    norm = np.sqrt(sum(float(np.square(a.astype(np.float64)).sum()) for a in result.delta.values()))
    assert norm == pytest.approx(1.0, rel=1e-5)


def test_scaffold_publishes_c_and_moves_it_by_the_sampled_fraction_of_the_mean_control_delta() -> None:
    made = algorithm(job("scaffold", {"totalClients": 4}))
    model, parameters = made.broadcast(BASE, 1, {})
    published, attachments = split(decode(model.payload))
    assert published.keys() == BASE.weights.keys() and model.weights.keys() == BASE.weights.keys()
    assert not attachments[SERVER_CONTROL]["fc.weight"].any()  # c starts at zero
    assert parameters == {} and made.client_settings().scaffold_run

    result = one_round(made, model, [("a", 1.0, 10), ("b", 3.0, 90)], control=2.0)
    new = made.apply(model.weights, result)
    np.testing.assert_array_equal(new["fc.bias"], [2.0, 2.0])  # uniform mean, as in the paper
    second, _ = made.broadcast(GlobalModel.from_weights(new, 1), 2, {})
    _, attachments = split(decode(second.payload))
    np.testing.assert_allclose(attachments[SERVER_CONTROL]["fc.bias"], 2.0 * 2 / 4)  # |S|/N = 2/4
    assert made.round_report()["scaffold"]["clients"] == 2


def test_scaffold_refuses_an_update_without_or_with_a_malformed_control_delta() -> None:
    made = algorithm(job("scaffold"))
    model, _ = made.broadcast(BASE, 1, {})
    aggregation = made.new_round(model)
    with pytest.raises(UpdateRejected, match="nsfl.scaffold"):
        aggregation.add(weights(1.0), 1, client_id="a")
    with pytest.raises(UpdateRejected, match="control-variate delta is not valid"):
        aggregation.add(
            weights(1.0), 1, client_id="a", attachments={CONTROL_DELTA: {"fc.bias": np.zeros(2, np.float32)}}
        )
    with pytest.raises(RoundFailed, match="no updates"):
        aggregation.result()  # both were refused before they changed anything


def test_attachments_are_refused_when_the_algorithm_expects_none() -> None:
    aggregation = algorithm(job()).new_round(BASE)
    with pytest.raises(UpdateRejected, match="unexpected attachments"):
        aggregation.add(weights(1.0), 1, client_id="a", attachments={CONTROL_DELTA: weights(0.0)})


def test_central_dp_clips_every_update_weighs_them_alike_and_noises_the_sum() -> None:
    spec = job(privacy={"dp": {"clipNorm": 1.0, "noiseMultiplier": 0.5, "targetDelta": 1e-5}})
    made = algorithm(spec, seed=7)
    result = one_round(made, BASE, [("a", 10.0, 1), ("b", 10.0, 1000)])

    clipped = 10.0 / np.sqrt(8 * 100.0)  # each update scaled to norm 1 (8 coordinates of 10)
    noise = np.random.default_rng(7).normal(0.0, 0.5 * 1.0, size=2).astype(np.float32)
    np.testing.assert_allclose(result.delta["fc.bias"], clipped + noise / 2, rtol=1e-5)
    made.apply(BASE.weights, result)
    privacy = made.round_report()["privacy"]
    assert privacy["epsilon"] == pytest.approx(PrivacyAccountant(0.5, 1.0, 1e-5).epsilon_after(1))
    assert (privacy["rounds"], privacy["clipNorm"], privacy["noiseMultiplier"]) == (1, 1.0, 0.5)
    assert made.status_fields() == {"privacy": privacy}


def test_the_job_stops_before_a_round_that_would_exceed_the_target_epsilon() -> None:
    spent = PrivacyAccountant(1.0, 1.0, 1e-5)
    target = (spent.epsilon_after(2) + spent.epsilon_after(3)) / 2
    made = algorithm(job(privacy={"dp": {"clipNorm": 1.0, "noiseMultiplier": 1.0, "targetEpsilon": target}}))
    model = BASE
    for round_number in (1, 2):
        assert made.stop_reason() is None
        model = GlobalModel.from_weights(
            made.apply(model.weights, one_round(made, model, [("a", 1.0, 1)])), round_number
        )
    assert made.stop_reason() is not None and made.stop_reason().startswith("target epsilon reached")


def test_a_target_epsilon_below_one_round_is_refused_at_start() -> None:
    with pytest.raises(ValidationFailed, match="below the ε of a single round"):
        algorithm(job(privacy={"dp": {"clipNorm": 1.0, "noiseMultiplier": 1.0, "targetEpsilon": 0.1}}))


def test_local_dp_sends_the_settings_to_clients_and_accounts_per_client() -> None:
    dp = {"mode": "local", "clipNorm": 2.0, "noiseMultiplier": 4.0, "targetDelta": 1e-6}
    made = algorithm(job(privacy={"dp": dp}))
    assert made.client_settings().local_dp == LocalDp(clip_norm=2.0, noise_multiplier=4.0, target_delta=1e-6)
    made.apply(BASE.weights, one_round(made, BASE, [("a", 1.0, 1), ("b", 1.0, 1)]))
    made.apply(BASE.weights, one_round(made, BASE, [("a", 1.0, 1)]))
    report = made.round_report()["privacy"]
    assert report["rounds"] == 2  # client a uploaded twice
    assert report["epsilon"] == pytest.approx(PrivacyAccountant(2.0, 1.0, 1e-6).epsilon_after(2))


def test_secure_aggregation_with_dp_adds_no_server_noise_but_accounts_each_release() -> None:
    spec = job(privacy={"dp": {"clipNorm": 1.0, "noiseMultiplier": 1.0}, "secureAggregation": {}})
    made = algorithm(spec)
    aggregation = made.new_round(BASE)
    aggregation.add(weights(5.0), 3.0)  # the unmasked mean (clients clipped and noised it)
    result = aggregation.result()
    assert result.delta["fc.bias"][0] == 5.0
    made.apply(BASE.weights, result)
    assert made.round_report()["privacy"]["mode"] == "distributed"
    assert made.round_report()["privacy"]["rounds"] == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (job("median", privacy={"dp": {"clipNorm": 1.0, "noiseMultiplier": 1.0}}), "streaming mean"),
        (
            job("scaffold", privacy={"dp": {"mode": "local", "clipNorm": 1.0, "noiseMultiplier": 1.0}}),
            "control-variate deltas",
        ),
        (job("scaffold", privacy={"secureAggregation": {}}), "secure aggregation hides"),
        (job("fedavg", {"totalClients": 3}), "totalClients"),
        (job("fedavg", {"rejectNormFactor": 0.5}), "rejectNormFactor"),
    ],
)
def test_combinations_that_cannot_work_are_refused_with_the_reason(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationFailed, match=message):
        algorithm(spec)


def test_state_survives_a_checkpoint_and_the_resumed_job_continues_exactly() -> None:
    spec = job("scaffold", optimizer={"learningRate": 0.5})
    original = algorithm(spec)
    model, _ = original.broadcast(BASE, 1, {})
    first = GlobalModel.from_weights(
        original.apply(model.weights, one_round(original, model, [("a", 1.0, 1)], 1.0)), 1
    )
    saved = unpack(pack(1, first.weights, original.state(), {}), {"key": "checkpoint"})

    resumed = JobAlgorithm(stored_spec(spec))
    resumed.load_state({**saved.optimizer_arrays, **saved.optimizer_scalars})
    outcomes = []
    for made in (original, resumed):
        model, parameters = made.broadcast(first, 2, {})
        outcomes.append(
            (
                made.apply(model.weights, one_round(made, model, [("b", 2.0, 1)], 3.0)),
                parameters,
                made.state()["scaffold_c"],
            )
        )
    (a, params_a, c_a), (b, params_b, c_b) = outcomes
    assert params_a == params_b  # same SCAFFOLD run id: clients keep their c_i
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        np.testing.assert_array_equal(c_a[name], c_b[name])


def test_adaptive_optimizer_moments_survive_a_checkpoint() -> None:
    spec = job("fedyogi", optimizer={"learningRate": 0.1})
    original = algorithm(spec)
    first = original.apply(BASE.weights, one_round(original, BASE, [("a", 1.0, 1)]))
    saved = unpack(pack(1, first, original.state(), {}), {"key": "checkpoint"})
    resumed = JobAlgorithm(stored_spec(spec))
    resumed.load_state({**saved.optimizer_arrays, **saved.optimizer_scalars})
    model = GlobalModel.from_weights(first, 1)
    a = original.apply(model.weights, one_round(original, model, [("a", -0.5, 1)]))
    b = resumed.apply(model.weights, one_round(resumed, model, [("a", -0.5, 1)]))
    np.testing.assert_array_equal(a["fc.weight"], b["fc.weight"])


def test_privacy_spent_survives_a_checkpoint_and_other_settings_are_refused() -> None:
    spec = job(privacy={"dp": {"clipNorm": 1.0, "noiseMultiplier": 1.0}})
    original = algorithm(spec)
    original.apply(BASE.weights, one_round(original, BASE, [("a", 1.0, 1)]))
    state = original.state()
    resumed = algorithm(spec)
    resumed.load_state(state)
    assert resumed.status_fields() == original.status_fields()
    other = algorithm(job(privacy={"dp": {"clipNorm": 2.0, "noiseMultiplier": 1.0}}))
    with pytest.raises(ValidationFailed, match="other privacy.dp settings"):
        other.load_state(state)
    with pytest.raises(ValidationFailed, match="no privacy state"):
        algorithm(spec).load_state({"step": 1})
