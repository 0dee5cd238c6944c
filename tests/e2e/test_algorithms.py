"""Real processes on loopback train the digits job with each client- and server-side algorithm.

One selector and three PyTorch task managers (IID digits shares, the
example's ``train.py``, which makes the ``nsfl.fedprox`` / ``nsfl.scaffold``
calls) serve every job of this module in turn, so the processes start once.
Each job runs 3 rounds and is evaluated after its last one; it must end
FINISHED with the accuracy stated in its test.  The thresholds sit below
what was measured on a loaded two-core machine (figures in each docstring,
"measured"), and far above chance (0.10).

Run alone: ``pytest tests/e2e/test_algorithms.py`` (30-40 s on two idle cores,
about three minutes on two loaded ones).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from libs.privacy import PrivacyAccountant
from tests.e2e.conftest import client_config, digits_job
from tests.e2e.harness import Cluster, iter_evaluations, read_status, wait_for
from tests.fixtures.pki import TestPki

pytestmark = pytest.mark.slow

ROUNDS = 3
JOB_TIMEOUT = 150.0
# Central DP's budget: halfway between what 2 and 3 rounds spend, so the job stops after round 2.
_SPENT = PrivacyAccountant(0.02, 1.0, 1e-5)
TARGET_EPSILON = (_SPENT.epsilon_after(2) + _SPENT.epsilon_after(3)) / 2


class Federation:
    """A selector and three task managers shared by the module's jobs."""

    def __init__(self, cluster: Cluster, selector: str) -> None:
        self.cluster = cluster
        self.selector = selector

    def run(self, name: str, **changes: Any) -> dict[str, Any]:
        """Run one digits job to its end; its final status."""
        rounds = changes.pop("rounds", ROUNDS)
        job = digits_job(name, rounds=rounds, evaluateEvery=rounds, checkpointEvery=rounds, **changes)
        workdir = self.cluster.base / name
        proc = self.cluster.start_coordinator(
            name, job, selector=self.selector, workdir=workdir, state=self.cluster.base / f"{name}-state"
        )
        wait_for(f"the {name} coordinator to end", lambda: not proc.alive(), JOB_TIMEOUT, self.cluster.procs)
        status = read_status(workdir)
        assert status.get("state") == "FINISHED", (
            f"{status.get('state')}: {status.get('reason')}\n{self.cluster.logs()}"
        )
        print(f"{name}: rounds {status.get('round')}, evaluations {dict(iter_evaluations(status))}")
        return status


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, digits_shares: dict[str, dict[str, Any]], test_pki: TestPki
) -> Iterator[Federation]:
    cluster = Cluster(tmp_path_factory.mktemp("algorithms"), test_pki)
    try:
        selector = cluster.start_selector()
        for index, share in enumerate(digits_shares.values()):
            name = f"client-{index}"
            cluster.start_task_manager(name, client_config(name, share, selector, cluster.base / name))
        yield Federation(cluster, selector)
    finally:
        cluster.teardown()


def final_accuracy(status: dict[str, Any]) -> float:
    evaluations = dict(iter_evaluations(status))
    assert list(evaluations) == [status["round"]], evaluations
    return float(evaluations[status["round"]]["accuracy"])


def test_fedprox_trains_with_the_proximal_term_on_every_client(federation: Federation) -> None:
    """FedProx, mu = 0.01: measured 0.90-0.94 after 3 rounds over 6 runs (threshold 0.85)."""
    status = federation.run("fedprox", aggregation={"name": "fedprox", "params": {"mu": 0.01}})
    assert status["round"] == ROUNDS
    assert final_accuracy(status) >= 0.85
    assert all(record["trainMetrics"]["fedprox/mu"] == pytest.approx(0.01) for record in status["history"])


def test_scaffold_keeps_control_variates_per_client_and_job(federation: Federation) -> None:
    """SCAFFOLD: measured 0.92-0.95 after 3 rounds over 6 runs (threshold 0.85); c moves, each client keeps c_i."""
    status = federation.run("scaffold", aggregation={"name": "scaffold"})
    assert final_accuracy(status) >= 0.85
    norms = [record["scaffold"]["controlNorm"] for record in status["history"]]
    assert all(norm > 0 for norm in norms) and status["history"][-1]["scaffold"]["clients"] == 3
    kept = sorted(federation.cluster.base.glob("client-*/jobs/*/state/scaffold-control.safetensors"))
    assert len(kept) == 3, kept  # one c_i per client, in that client's own workspace


def test_fedadam_applies_the_server_optimizer(federation: Federation) -> None:
    """FedAdam, server learning rate 0.1, beta1 0.9, beta2 0.99, tau 1e-3: measured 0.92-0.94 over 6 runs (threshold 0.85).

    (0.03 reached 0.87-0.90: the published default 0.01 is meant for hundreds of rounds.)
    """
    status = federation.run("fedadam", aggregation={"name": "fedadam"}, optimizer={"learningRate": 0.1})
    assert final_accuracy(status) >= 0.85


def test_trimmed_mean_trims_one_update_per_side_of_three(federation: Federation) -> None:
    """Trimmed mean, trimFraction 0.34 of 3 clients (the coordinate-wise median): measured 0.90-0.94 over 6 runs (threshold 0.85)."""
    status = federation.run(
        "trimmed", aggregation={"name": "trimmedmean", "params": {"trimFraction": 0.34}}, minClients=3
    )
    assert final_accuracy(status) >= 0.85


def test_central_dp_reports_epsilon_and_stops_at_the_target(federation: Federation) -> None:
    """Central DP, C = 5, sigma = 0.02: ε per round is reported; targetEpsilon stops the job early.

    Measured 0.87-0.93 after 2 rounds over 6 runs (threshold 0.80): with only three clients a
    meaningful ε would need far more noise than the model survives; the test
    checks the mechanism, clipping, noise, accounting and the budget stop.
    """
    dp = {"clipNorm": 5.0, "noiseMultiplier": 0.02, "targetDelta": 1e-5, "targetEpsilon": TARGET_EPSILON}
    status = federation.run("central-dp", privacy={"dp": dp}, rounds=5)
    assert status["reason"].startswith("target epsilon reached"), status["reason"]
    spent = [record["privacy"]["epsilon"] for record in status["history"]]
    assert len(spent) == 2 and spent[0] < spent[1] <= TARGET_EPSILON
    assert status["privacy"]["epsilon"] == spent[-1] and status["privacy"]["delta"] == 1e-5
    assert final_accuracy(status) >= 0.80


def test_local_dp_noises_each_update_on_its_client(federation: Federation) -> None:
    """Local DP, C = 5, sigma = 0.01: measured 0.93-0.94 after 3 rounds over 6 runs (threshold 0.85); clients report ε."""
    dp = {"mode": "local", "clipNorm": 5.0, "noiseMultiplier": 0.01}
    status = federation.run("local-dp", privacy={"dp": dp})
    assert final_accuracy(status) >= 0.85
    last = status["history"][-1]
    assert last["privacy"]["mode"] == "local" and last["privacy"]["epsilon"] > 0
    assert last["trainMetrics"]["privacy/epsilon"] == pytest.approx(last["privacy"]["epsilon"])


def test_an_unknown_optimizer_key_fails_the_job_with_its_name(federation: Federation, tmp_path: Path) -> None:
    job = digits_job("bad-optimizer", rounds=1, aggregation={"name": "fedadam"}, optimizer={"lr": 0.1})
    workdir = federation.cluster.base / "bad-optimizer"
    proc = federation.cluster.start_coordinator(
        "bad-optimizer", job, selector=federation.selector, workdir=workdir, state=tmp_path / "state"
    )
    wait_for("the coordinator to fail", lambda: not proc.alive(), 60, federation.cluster.procs)
    status = read_status(workdir)
    assert proc.popen.returncode == 1 and status["state"] == "FAILED"
    assert "unknown parameter 'lr'" in status["reason"] and "learningRate" in status["reason"]
