"""Extenders: a job's hooks loaded from inside the extenders root, called with contracts, failing rounds only."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator.algorithms import JobAlgorithm
from coordinator.errors import ExtenderFailed
from coordinator.extenders import Extenders, resolve_hook_file
from coordinator.model_state import GlobalModel
from libs.aggregation.attachments import FILE, file_bytes, split
from libs.errors import PathOutsideRoot, ValidationFailed
from libs.tasks import AlgorithmSettings
from libs.weights.tensors import decode
from tests.unit.coordinator.specs import hooks_of, stored_spec

HOOKS = """
    import numpy as np

    calls = []

    def send(ctx):
        calls.append(("broadcast", ctx.round))
        return {"parameters": {"temperature": 0.5, "round_seen": ctx.round},
                "files": {"vocab.txt": b"alpha\\nbeta\\n"}}

    def first_update(ctx):
        # a custom rule: take the update of the client whose id sorts first
        chosen = min(ctx.updates, key=lambda update: update.client_id)
        return {name: np.array(array) for name, array in chosen.delta.items()}

    def after(ctx):
        return {"bias_mean": float(np.mean(ctx.weights["fc.bias"])), "final": float(ctx.final)}

    def explode(ctx):
        raise RuntimeError("the hook is broken")

    def wrong_shape(ctx):
        return {"fc.bias": np.zeros(5, np.float32), "fc.weight": np.zeros((2, 3), np.float32)}

    def not_json(ctx):
        return {"parameters": {"when": object()}}

    def leaves(ctx):
        raise SystemExit(3)
"""


def weights(value: float = 0.0) -> dict[str, np.ndarray]:
    return {"fc.bias": np.full(2, value, np.float32), "fc.weight": np.full((2, 3), value, np.float32)}


BASE = GlobalModel.from_weights(weights(), 0)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundles"
    (bundle / "job").mkdir(parents=True)
    (bundle / "job" / "hooks.py").write_text(textwrap.dedent(HOOKS))
    return bundle


def job(**hooks: str) -> dict[str, Any]:
    return {
        "name": "digits",
        "namespace": "ns",
        "rounds": 2,
        "clientsPerRound": 2,
        "minClients": 1,
        "serverLearningRate": 1.0,
        "aggregation": {"name": "fedavg", "params": {}},
        "scripts": {"entry": "train.py"},
        "extenders": {"file": "job/hooks.py", **hooks},
    }


def prepared(root: Path, **hooks: str) -> JobAlgorithm:
    made = JobAlgorithm(stored_spec(job(**hooks)), extenders_root=root)
    made.prepare()
    return made


def test_the_hook_file_must_stay_inside_the_extenders_root(root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.py").write_text("")
    assert resolve_hook_file(root, "job/hooks.py") == (root / "job" / "hooks.py").resolve()
    with pytest.raises(PathOutsideRoot):
        resolve_hook_file(root, "../outside.py")
    with pytest.raises(PathOutsideRoot):
        resolve_hook_file(root, str(tmp_path / "outside.py"))
    (root / "link.py").symlink_to(tmp_path / "outside.py")
    with pytest.raises(PathOutsideRoot):
        resolve_hook_file(root, "link.py")
    with pytest.raises(ValidationFailed, match="no extenders root"):
        resolve_hook_file(None, "job/hooks.py")
    with pytest.raises(ValidationFailed, match="is not a file"):
        resolve_hook_file(root, "job/missing.py")


def test_a_missing_function_or_a_file_that_fails_to_load_fails_the_job_at_start(root: Path) -> None:
    with pytest.raises(ValidationFailed, match="has no function 'nowhere'"):
        prepared(root, broadcast="nowhere")
    (root / "job" / "broken.py").write_text("raise ImportError('no such library')\n")
    spec = {**job(finish="after"), "extenders": {"file": "job/broken.py", "finish": "after"}}
    with pytest.raises(ValidationFailed, match="failed to load: ImportError: no such library"):
        JobAlgorithm(stored_spec(spec), extenders_root=root).prepare()


def test_broadcast_sends_parameters_and_files_with_the_round_model(root: Path) -> None:
    made = prepared(root, broadcast="send")
    model, parameters = made.broadcast(BASE, 3, {"epochs": 1})
    assert parameters == {"epochs": 1, "temperature": 0.5, "round_seen": 3}
    published, attachments = split(decode(model.payload))
    assert file_bytes(attachments[FILE]["vocab.txt"]) == b"alpha\nbeta\n"
    assert model.weights.keys() == published.keys() == BASE.weights.keys()
    assert model.sha256 != BASE.sha256 and model.round == BASE.round


def test_an_aggregate_hook_replaces_the_rule_and_sees_every_update(root: Path) -> None:
    made = prepared(root, aggregate="first_update")
    assert not made.streams  # the hook needs the whole round
    aggregation = made.new_round(BASE)
    aggregation.add(weights(2.0), 10, client_id="zeta")
    aggregation.add(weights(1.0), 10, client_id="alpha")
    new = made.apply(BASE.weights, aggregation.result())
    np.testing.assert_array_equal(new["fc.bias"], [1.0, 1.0])


def test_finish_metrics_go_into_the_round_record(root: Path) -> None:
    made = prepared(root, finish="after")
    aggregation = made.new_round(BASE)
    aggregation.add(weights(0.5), 1, client_id="a")
    made.apply(BASE.weights, aggregation.result())
    assert made.round_report()["extender"] == {"bias_mean": 0.5, "final": 0.0}


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ({"broadcast": "explode"}, "extender broadcast failed: RuntimeError: the hook is broken"),
        ({"broadcast": "not_json"}, "extender broadcast failed: 'parameters' must hold JSON values only"),
        ({"broadcast": "leaves"}, "extender broadcast failed: SystemExit: 3"),
    ],
)
def test_a_failing_broadcast_hook_fails_the_round_with_its_message(
    root: Path, hooks: dict[str, str], message: str
) -> None:
    with pytest.raises(ExtenderFailed) as caught:
        prepared(root, **hooks).broadcast(BASE, 1, {})
    assert caught.value.message.startswith(message)


def test_an_aggregate_hook_returning_the_wrong_layout_fails_the_round(root: Path) -> None:
    made = prepared(root, aggregate="wrong_shape")
    aggregation = made.new_round(BASE)
    aggregation.add(weights(1.0), 1, client_id="a")
    with pytest.raises(ExtenderFailed, match="extender aggregate failed: the aggregated delta does not fit"):
        aggregation.result()


def test_a_failing_finish_hook_leaves_the_optimizer_as_before_the_round(root: Path) -> None:
    spec = {**job(finish="explode"), "aggregation": {"name": "fedavgm", "params": {}}}
    made = JobAlgorithm(stored_spec(spec), extenders_root=root)
    made.prepare()
    before = made.state()
    aggregation = made.new_round(BASE)
    aggregation.add(weights(1.0), 1, client_id="a")
    with pytest.raises(ExtenderFailed, match="extender finish failed: RuntimeError"):
        made.apply(BASE.weights, aggregation.result())
    assert made.state()["step"] == before["step"] == 0
    assert made.state()["momentum"] == {}


def test_a_broadcast_cannot_change_what_clients_are_told_of_the_algorithm(root: Path, tmp_path: Path) -> None:
    (root / "job" / "sneaky.py").write_text(
        "def send(ctx):\n    return {'parameters': {'__nsfl__': {'aggregation': 'fedavg'}, 'algorithm': {}}}\n"
    )
    spec = {**job(), "aggregation": {"name": "fedprox", "params": {"mu": 0.5}},
            "extenders": {"file": "job/sneaky.py", "broadcast": "send"}}
    made = JobAlgorithm(stored_spec(spec), extenders_root=root)
    _, parameters = made.broadcast(BASE, 1, {})
    assert parameters == {"__nsfl__": {"aggregation": "fedavg"}, "algorithm": {}}, "plain parameters of the script"
    assert made.client_settings() == AlgorithmSettings(aggregation="fedprox", fedprox_mu=0.5)


def test_only_the_hooks_the_job_names_are_loaded(root: Path) -> None:
    extenders = Extenders.load(hooks_of(job(broadcast="send")), "ns/digits", root)
    assert extenders.has("broadcast") and not extenders.has("aggregate")
