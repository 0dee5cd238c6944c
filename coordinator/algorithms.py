"""One job's algorithm on the coordinator: aggregation rule, server optimiser, SCAFFOLD, DP, extenders.

:class:`JobAlgorithm` turns the job spec's ``aggregation``, ``optimizer``,
``serverLearningRate``, ``privacy.dp`` and ``extenders`` into what a round
needs, on top of the pure algorithms of :mod:`libs.aggregation`
(``make_aggregator(name, params)``) and :mod:`libs.privacy`:

* :meth:`JobAlgorithm.broadcast` -- before a train round is offered: the
  global model to publish (with SCAFFOLD's server control variate ``c`` and
  any broadcast files as attachments, :mod:`libs.aggregation.attachments`)
  and the task parameters (the job's, plus a broadcast extender's);
* :meth:`JobAlgorithm.client_settings` -- what clients must know of the
  algorithm (:class:`~libs.tasks.spec.AlgorithmSettings`: FedProx's ``mu``,
  SCAFFOLD's run id, local DP's settings), typed beside the parameters;
* :meth:`JobAlgorithm.new_round` -- a
  :class:`~coordinator.round_aggregation.RoundAggregation` that takes each
  accepted update as it arrives;
* :meth:`JobAlgorithm.apply` -- the server step at the end of the round;
* :meth:`JobAlgorithm.state` / :meth:`JobAlgorithm.load_state` -- everything
  a resumed job needs (optimiser moments, ``c``, privacy spent), saved in
  every checkpoint so a resumed job continues exactly.

Memory.  The FedAvg family (fedavg, fedprox, scaffold, fedavgm, fedadam,
fedyogi, fedadagrad) *streams*: each update is folded into a running sum as it
arrives and dropped, so the coordinator holds about two models (three with
SCAFFOLD's control sum) whatever the number of clients.  The robust rules
(median, trimmedmean, krum, multikrum), an ``aggregate`` extender and
``rejectNormFactor`` need every update of the round at once: memory grows to
n models for n updates, so size ``clientsPerRound`` to the coordinator.

Coordinator-level parameters (in ``aggregation.params`` beside the
algorithm's own, for any algorithm):

* ``maxUpdateNorm``: clip each update to this L2 norm as it arrives (bounds a
  single client's influence; Sun et al. 2019, "Can You Really Backdoor
  Federated Learning?", norm-bounding defence);
* ``rejectNormFactor`` (>= 1): drop updates whose norm exceeds this factor
  times the round's median norm (``libs.aggregation.robust.reject_by_norm``;
  assumes fewer than half the updates are outliers), recorded under
  ``screened`` in the round record;
* ``totalClients``: SCAFFOLD's N, the number of clients in the federation,
  which scales the server control update ``c += |S|/N mean(Delta c)``.
  Without it N is the job's ``clients`` list if given, else the number of
  distinct clients that have contributed so far (never less than |S|).

Errors.  A bad parameter, an unknown ``optimizer`` key, or a combination that
cannot work (central DP with a robust rule, SCAFFOLD under secure
aggregation, a rule needing more updates than ``minClients``) is a
:class:`~libs.errors.ValidationFailed` from :meth:`JobAlgorithm.prepare`,
which the driver turns into a FAILED job with that message.  Problems that
belong to one round (an extender raising, a robust rule left with too few
updates) are :class:`~coordinator.errors.RoundFailed`, and the round is
retried.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.aggregation_parameters import COORDINATOR_PARAMETERS, coordinator_parameters, merge_optimizer
from coordinator.errors import ExtenderFailed
from coordinator.extenders import (
    BroadcastContext,
    Extenders,
    FinishContext,
)
from coordinator.model_state import GlobalModel
from coordinator.privacy_accounting import CENTRAL, LOCAL, DifferentialPrivacy, dp_config
from coordinator.round_aggregation import RoundAggregation, RoundResult
from libs.aggregation import Aggregator, make_aggregator
from libs.aggregation.attachments import FILE, SERVER_CONTROL, file_tensor
from libs.aggregation.robust import update_norm
from libs.aggregation.server_optimizers import ServerOptimizer
from libs.errors import ValidationFailed
from libs.jobspec import JobSpec
from libs.tasks import AlgorithmSettings
from libs.weights.tensors import WeightMap

log = logging.getLogger(__name__)


class JobAlgorithm:
    """Everything algorithmic about one job on the coordinator (see the module docstring)."""

    def __init__(
        self,
        spec: JobSpec,
        *,
        extenders_root: Path | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self._spec = spec
        self._extenders_root = extenders_root
        self._rng = rng
        self.job_id = spec.job_id
        self.rounds = spec.rounds
        self._prepared = False
        self._control: WeightMap | None = None  # SCAFFOLD's c
        self._scaffold_run = secrets.token_hex(8)
        self._scaffold_clients: set[str] = set()
        self._last_report: dict[str, Any] = {}

    # -- configuration ------------------------------------------------------------------------
    def prepare(self) -> None:
        """Resolve and check the configuration, load the extenders (idempotent); ValidationFailed if wrong."""
        if self._prepared:
            return
        spec = self._spec
        name = spec.aggregation.name
        params = dict(spec.aggregation.params)
        self.screening = coordinator_parameters(name, params)
        params = {key: value for key, value in params.items() if key not in COORDINATOR_PARAMETERS}
        probe = make_aggregator(name, params)
        merged = merge_optimizer(name, probe, dict(spec.optimizer), params)
        server_rate = spec.server_learning_rate
        # serverLearningRate defaults to 1.0 (FedAvg as published); the adaptive optimisers keep their
        # published default unless the job sets a rate for them explicitly.
        if "learningRate" not in merged and (probe.optimizer in ("fedavg", "fedavgm") or server_rate != 1.0):
            merged["learningRate"] = server_rate
        self.aggregator: Aggregator = make_aggregator(name, merged)
        self.optimizer: ServerOptimizer = self.aggregator.make_optimizer()
        config = dp_config(spec)
        self.privacy = None if config is None else DifferentialPrivacy(config, self._rng)
        self.secure = spec.privacy.secure_aggregation is not None
        self.extenders = (
            None
            if spec.extenders is None
            else Extenders.load(spec.extenders, self.job_id, self._extenders_root)
        )
        self.streams = (
            self.aggregator.streams
            and self.screening.reject_factor is None
            and not (self.extenders is not None and self.extenders.has("aggregate"))
        )
        self._check_combinations()
        if self.privacy is not None:
            self.privacy.check_target()
        self._prepared = True
        log.info(
            "aggregation %s %s, server optimizer %s",
            name,
            dict(self.aggregator.parameters),
            self.aggregator.optimizer,
        )

    def _check_combinations(self) -> None:
        name = self.aggregator.name
        dp, secure = self.privacy, self.secure
        if dp is not None and dp.config.mode == CENTRAL and not self.streams:
            raise ValidationFailed(
                f"central differential privacy needs a streaming mean: {name}"
                f"{', rejectNormFactor' if self.screening.reject_factor else ''}"
                f"{', an aggregate extender' if self.extenders and self.extenders.has('aggregate') else ''} "
                "would change the sensitivity the noise is calibrated to; use privacy.dp.mode local instead"
            )
        if self.scaffold and dp is not None:
            raise ValidationFailed(
                "scaffold cannot be combined with privacy.dp: the control-variate deltas "
                "would leave the clients without noise"
            )
        if secure and (self.scaffold or not self.streams or self.screening.max_norm is not None):
            raise ValidationFailed(
                "secure aggregation hides individual updates: it cannot be combined with scaffold, "
                "robust rules, rejectNormFactor, maxUpdateNorm or an aggregate extender"
            )
        minimum = self._spec.min_clients
        needed = self.aggregator.minimum_clients
        if minimum < needed:
            raise ValidationFailed(
                f"{name} with {dict(self.aggregator.parameters)} needs at least {needed} updates per round, "
                f"but a round may close with minClients = {minimum}; raise minClients or change the parameters"
            )

    @property
    def scaffold(self) -> bool:
        return self.aggregator.control_variates

    # -- before a round ----------------------------------------------------------------------
    def client_settings(self) -> AlgorithmSettings:
        """What clients must know of the algorithm; the default (nothing) for plain FedAvg."""
        self.prepare()
        mu = self.aggregator.client_parameters.get("mu")  # FedProx's, the one client-side parameter
        local_dp = None
        if self.privacy is not None and self.privacy.config.mode == LOCAL and not self.secure:
            # Under secure aggregation the round's plan carries the DP settings and the secure
            # client adds the noise (coordinator.secure_rounds): sending them here would noise twice.
            local_dp = self.privacy.config.local_dp()
        settings = AlgorithmSettings(
            fedprox_mu=None if mu is None else float(mu),
            scaffold_run=self._scaffold_run if self.scaffold else None,
            local_dp=local_dp,
        )
        if settings == AlgorithmSettings():
            return settings
        return dataclasses.replace(settings, aggregation=self.aggregator.name)

    def control_for(self, weights: Mapping[str, np.ndarray]) -> WeightMap:
        """SCAFFOLD's server control variate c (zeros at first) over the model's float tensors."""
        if self._control is None:
            self._control = {
                name: np.zeros(array.shape, array.dtype)
                for name, array in weights.items()
                if array.dtype.kind == "f"
            }
        return self._control

    def broadcast(
        self, model: GlobalModel, round_number: int, parameters: Mapping[str, Any]
    ) -> tuple[GlobalModel, dict[str, Any]]:
        """The model to publish for train round ``round_number`` and the tasks' parameters."""
        self.prepare()
        merged = dict(parameters)
        attachments: dict[str, dict[str, np.ndarray]] = {}
        if self.scaffold:
            attachments[SERVER_CONTROL] = self.control_for(model.weights)
        if self.extenders is not None and self.extenders.has("broadcast"):
            sent = self.extenders.broadcast(
                BroadcastContext(
                    job_id=self.job_id, round=round_number, weights=model.weights, parameters=dict(parameters)
                )
            )
            merged.update(sent.parameters)
            if sent.files:
                attachments[FILE] = {name: file_tensor(data) for name, data in sent.files.items()}
        if not attachments:
            return model, merged
        return model.with_attachments(attachments), merged

    def new_round(self, model: GlobalModel) -> RoundAggregation:
        """The aggregation of one attempt of the train round after ``model``."""
        self.prepare()
        return RoundAggregation(self, model)

    # -- after a round -----------------------------------------------------------------------------
    def apply(
        self, weights: Mapping[str, np.ndarray], aggregate: RoundResult | Mapping[str, np.ndarray]
    ) -> WeightMap:
        """The next global model.  A plain map is taken as the round's mean delta (no control variates)."""
        self.prepare()
        result = (
            aggregate
            if isinstance(aggregate, RoundResult)
            else RoundResult(round=0, delta=dict(aggregate), count=1)
        )
        finish = self.extenders is not None and self.extenders.has("finish")
        saved = self.optimizer.state() if finish else None
        new_weights = self.optimizer.step(dict(weights), dict(result.delta))
        control, clients = self._next_control(result)
        report: dict[str, Any] = {}
        if finish and self.extenders is not None:
            final = result.round >= self.rounds or (
                self.privacy is not None and self.privacy.stop_reason() is not None
            )
            try:
                metrics = self.extenders.finish(
                    FinishContext(
                        job_id=self.job_id,
                        round=result.round,
                        rounds=self.rounds,
                        final=final,
                        previous=weights,
                        weights=new_weights,
                        delta=result.delta,
                        participants=dict(result.participants),
                    )
                )
            except ExtenderFailed:
                assert saved is not None
                self.optimizer.load_state(saved)  # the round is retried: as if this step never happened
                raise
            if metrics:
                report["extender"] = metrics
        if control is not None:
            self._control, self._scaffold_clients = control, clients
            report["scaffold"] = {"clients": len(clients), "controlNorm": update_norm(control)}
        if self.privacy is not None:
            report["privacy"] = self.privacy.report()
        if result.screened:
            report["screened"] = list(result.screened)
        self._last_report = report
        return new_weights

    def _next_control(self, result: RoundResult) -> tuple[WeightMap | None, set[str]]:
        """``c + (|S| / N) * mean(Delta c)`` (Karimireddy et al. 2020, Algorithm 1, line 17)."""
        if not self.scaffold or result.control is None or self._control is None:
            return None, self._scaffold_clients
        clients = self._scaffold_clients | set(result.participants)
        listed = self._spec.clients
        total = self.screening.total_clients or (len(listed) if listed else len(clients))
        total = max(total, result.count)
        fraction = result.count / total
        control = {
            name: (c.astype(np.float64) + fraction * result.control[name].astype(np.float64)).astype(c.dtype)
            for name, c in self._control.items()
        }
        return control, clients

    def round_report(self) -> dict[str, Any]:
        """Fields for the last round's record: privacy spent, SCAFFOLD, screening, extender metrics."""
        return dict(self._last_report)

    def status_fields(self) -> dict[str, Any]:
        """Fields for the job status (the privacy spent so far)."""
        self.prepare()
        return {"privacy": self.privacy.report()} if self.privacy is not None else {}

    def stop_reason(self) -> str | None:
        """Why the job must finish before its next round (a privacy budget), or None."""
        self.prepare()
        return None if self.privacy is None else self.privacy.stop_reason()

    # -- checkpoints -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Optimiser state, SCAFFOLD's c, and the privacy spent (maps become checkpoint tensors)."""
        self.prepare()
        state: dict[str, Any] = dict(self.optimizer.state())
        if self.scaffold and self._control is not None:
            state["scaffold_c"] = {name: array.copy() for name, array in self._control.items()}
            state["scaffold_run"] = self._scaffold_run
            state["scaffold_clients"] = sorted(self._scaffold_clients)
        if self.privacy is not None:
            state["privacy"] = self.privacy.state()
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state` (as a checkpoint returns it)."""
        self.prepare()
        remaining = dict(state)
        control = remaining.pop("scaffold_c", None)
        run = remaining.pop("scaffold_run", None)
        clients = remaining.pop("scaffold_clients", None)
        privacy = remaining.pop("privacy", None)
        if remaining:
            for moment in self.optimizer.state():
                remaining.setdefault(moment, {})
            self.optimizer.load_state(remaining)
        if self.scaffold and control:
            self._control = {name: np.array(array, copy=True) for name, array in control.items()}
            self._scaffold_run = str(run or self._scaffold_run)
            self._scaffold_clients = {str(client) for client in clients or []}
        if self.privacy is not None:
            if privacy is None:
                raise ValidationFailed(
                    "the checkpoint holds no privacy state for this DP job; "
                    "resuming would under-report the privacy spent"
                )
            self.privacy.load_state(str(privacy))
