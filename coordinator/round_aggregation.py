"""One attempt of one train round on the coordinator: the updates in, the aggregated delta out.

:class:`RoundAggregation` is what the round runner folds each accepted update
into (see :mod:`coordinator.aggregating`), built by
:meth:`coordinator.algorithms.JobAlgorithm.new_round`.  It applies, in order,
what the job asked for each update: SCAFFOLD's control-variate delta is split
off and checked, ``maxUpdateNorm`` clips, central DP clips to ``C``; then the
update is folded into the running sum (the FedAvg family) or kept for the
whole-round rules (robust rules, ``rejectNormFactor``, an ``aggregate``
extender).  :meth:`RoundAggregation.result` gives a :class:`RoundResult`: the
aggregated delta (noised under central DP), the mean control-variate delta,
who took part and who was screened out.

Everything about an update is checked before any sum changes, so an update
refused with :class:`~libs.errors.UpdateRejected` leaves the round as it was;
SCAFFOLD's model and control deltas share one running sum for that reason.

What it asks of the job's algorithm is :class:`AggregationRules`, a protocol
that :class:`~coordinator.algorithms.JobAlgorithm` meets: this module needs
no import of the algorithm, so the two do not import each other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from coordinator.errors import RoundFailed
from coordinator.extenders import AggregateContext, ClientUpdate, Extenders
from coordinator.model_state import GlobalModel
from coordinator.privacy_accounting import LOCAL, DifferentialPrivacy
from libs.aggregation import Aggregator, WeightedSum, Weighting
from libs.aggregation.attachments import CONTROL_DELTA, PREFIX
from libs.aggregation.robust import clip_update, reject_by_norm, update_norm
from libs.errors import NsflError, UpdateRejected
from libs.weights.tensors import WeightMap, validate_update

log = logging.getLogger(__name__)


class Screening(Protocol):
    """The job's per-update screening (``maxUpdateNorm``, ``rejectNormFactor``)."""

    @property
    def max_norm(self) -> float | None: ...

    @property
    def reject_factor(self) -> float | None: ...


class AggregationRules(Protocol):
    """What a round's aggregation asks of the job's algorithm (:class:`~coordinator.algorithms.JobAlgorithm`)."""

    @property
    def job_id(self) -> str: ...

    @property
    def aggregator(self) -> Aggregator: ...

    @property
    def streams(self) -> bool: ...

    @property
    def scaffold(self) -> bool: ...

    @property
    def screening(self) -> Screening: ...

    @property
    def privacy(self) -> DifferentialPrivacy | None: ...

    @property
    def extenders(self) -> Extenders | None: ...

    def control_for(self, weights: Mapping[str, np.ndarray]) -> WeightMap: ...


@dataclass(frozen=True)
class RoundResult:
    """What one round aggregated: the delta the server step applies, and its provenance."""

    round: int
    delta: WeightMap
    count: int  # updates in the aggregate
    participants: dict[str, int] = field(default_factory=dict)  # client id -> sample count
    control: WeightMap | None = None  # SCAFFOLD: mean of the clients' Delta c
    screened: list[dict[str, Any]] = field(default_factory=list)  # updates dropped by rejectNormFactor


_CONTROL = f"{PREFIX}{CONTROL_DELTA}/"


def _control_names(control: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A control map under names that cannot collide with model tensors (for the joint running sum)."""
    return {_CONTROL + name: array for name, array in control.items()}


def _read_only(update: Mapping[str, np.ndarray]) -> WeightMap:
    """Views of the update that an extender hook cannot write through."""
    views = {}
    for name, array in update.items():
        view = array.view()
        view.flags.writeable = False
        views[name] = view
    return views


class RoundAggregation:
    """One attempt of one train round: takes accepted updates, then yields a :class:`RoundResult`.

    Called from the round runner's fold (one thread at a time).  ``add``
    validates everything about an update before it changes any sum, so a
    rejected update leaves the round as it was.
    """

    def __init__(self, algorithm: AggregationRules, model: GlobalModel) -> None:
        self._algorithm = algorithm
        self.round = model.round + 1
        self._model = model
        self._control_layout: WeightMap | None = None
        layout: dict[str, np.ndarray] = dict(model.weights)
        if algorithm.scaffold:
            self._control_layout = algorithm.control_for(model.weights)
            # One running sum over the model and the control variate: an update is folded
            # whole or not at all (the sum checks everything before it changes).
            layout.update(_control_names(self._control_layout))
        self._sum: WeightedSum | None = WeightedSum(layout) if algorithm.streams else None
        self._updates: list[ClientUpdate] = []
        self._controls: list[WeightMap | None] = []
        self._weights: list[float] = []
        self._participants: dict[str, int] = {}
        self._per_client_accounting = False

    def add(
        self,
        delta: Mapping[str, np.ndarray],
        weight: float,
        *,
        client_id: str = "",
        attachments: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    ) -> float:
        """Take one client's update (or, under secure aggregation, the round's unmasked mean)."""
        algorithm = self._algorithm
        control = self._control_delta(attachments or {})
        update: Mapping[str, np.ndarray] = delta
        if algorithm.screening.max_norm is not None:
            update = clip_update(update, algorithm.screening.max_norm)
        dp = algorithm.privacy
        if dp is not None and dp.server_noise:
            update, _ = dp.clip(update)
        uniform = algorithm.aggregator.weighting is Weighting.UNIFORM or (dp is not None and dp.server_noise)
        folded = 1.0 if uniform else float(weight)
        if self._sum is not None:
            norm = self._sum.add({**update, **_control_names(control or {})}, folded)
        else:
            validate_update(update, self._model.weights)
            self._updates.append(ClientUpdate(client_id, _read_only(update), int(weight)))
            self._controls.append(control)
            self._weights.append(folded)
            norm = update_norm(update)
        if client_id:
            self._participants[client_id] = int(weight)
            if dp is not None and dp.config.mode == LOCAL:
                dp.uploaded(client_id)
                self._per_client_accounting = True
        return norm

    def _control_delta(self, attachments: Mapping[str, Mapping[str, np.ndarray]]) -> WeightMap | None:
        if self._control_layout is None:
            if attachments:
                raise UpdateRejected(
                    f"unexpected attachments {sorted(attachments)}: this job's aggregation expects none"
                )
            return None
        extra = sorted(set(attachments) - {CONTROL_DELTA})
        if extra:
            raise UpdateRejected(f"unexpected attachments {extra} in a SCAFFOLD update")
        control = attachments.get(CONTROL_DELTA)
        if control is None:
            raise UpdateRejected(
                "a SCAFFOLD update must carry its control-variate delta; the training script "
                "must call nsfl.scaffold(model) before training"
            )
        try:
            validate_update(control, self._control_layout)
        except NsflError as exc:
            raise UpdateRejected(f"the control-variate delta is not valid: {exc.message}") from None
        return dict(control)

    def result(self) -> RoundResult:
        """The round's aggregated delta (noised under central DP); :class:`RoundFailed` if there is none."""
        algorithm = self._algorithm
        screened: list[dict[str, Any]] = []
        control: WeightMap | None = None
        if self._sum is not None:
            if self._sum.count == 0:
                raise RoundFailed(f"round {self.round}: no updates were aggregated")
            mean, count = self._sum.mean(), self._sum.count
            delta = {name: mean[name] for name in self._model.weights}
            if self._control_layout is not None:
                control = {name: mean[_CONTROL + name] for name in self._control_layout}
        else:
            kept, screened = self._screened()
            count = len(kept)
            delta = self._combine(kept)
            control = self._control_mean(kept)
        dp = algorithm.privacy
        if dp is not None:
            if dp.server_noise:
                delta = dp.noisy_mean(delta, count)
            elif dp.config.mode != LOCAL or not self._per_client_accounting:
                dp.released()  # the clients noised it (secure aggregation): one release
        return RoundResult(
            round=self.round,
            delta=delta,
            count=count,
            participants=dict(self._participants),
            control=control,
            screened=screened,
        )

    def _screened(self) -> tuple[list[int], list[dict[str, Any]]]:
        if not self._updates:
            raise RoundFailed(f"round {self.round}: no updates were aggregated")
        factor = self._algorithm.screening.reject_factor
        if factor is None:
            return list(range(len(self._updates))), []
        screening = reject_by_norm([u.delta for u in self._updates], factor)
        screened = []
        for rejected in screening.rejected:
            client = self._updates[rejected.index].client_id
            log.warning("round %d: update of %s screened out: %s", self.round, client, rejected.reason)
            screened.append({"client": client, "norm": rejected.norm, "reason": rejected.reason})
        if not screening.kept:
            raise RoundFailed(f"round {self.round}: every update was screened out by rejectNormFactor")
        return list(screening.kept), screened

    def _control_mean(self, kept: Sequence[int]) -> WeightMap | None:
        """SCAFFOLD's unweighted mean of Delta c over the updates that were kept."""
        controls = [control for index in kept if (control := self._controls[index]) is not None]
        if self._control_layout is None or not controls:
            return None
        return {
            name: np.mean([control[name] for control in controls], axis=0, dtype=np.float64).astype(c.dtype)
            for name, c in self._control_layout.items()
        }

    def _combine(self, kept: Sequence[int]) -> WeightMap:
        algorithm = self._algorithm
        updates = [self._updates[index] for index in kept]
        if algorithm.extenders is not None and algorithm.extenders.has("aggregate"):
            return algorithm.extenders.aggregate(
                AggregateContext(
                    job_id=algorithm.job_id,
                    round=self.round,
                    weights=self._model.weights,
                    updates=tuple(updates),
                )
            )
        try:
            return algorithm.aggregator.combine(
                [dict(u.delta) for u in updates], [self._weights[i] for i in kept]
            )
        except NsflError as exc:
            raise RoundFailed(
                f"round {self.round}: {algorithm.aggregator.name} could not aggregate "
                f"{len(updates)} update(s): {exc.message}"
            ) from None
