"""Evaluation that rides on the next round's training: one exchange per round instead of two.

Why: evaluating the model after round k used to take an exchange of its own
(select, offer, download, evaluate, upload metrics, close) before round k+1
could start; for a small model that doubles the platform's time per round.
Instead, when round k is to be evaluated (``evaluateEvery``), round k+1's
train tasks are offered with ``evaluate_first``: each client evaluates the
model it downloads (round k's) on its held-out data before training on it,
and uploads the metrics with its update, prefixed ``evaluate/``, with the
number of samples evaluated as ``nsfl.evaluate_samples``
(``task_executor.evaluation``).  When round k+1 closes, the sample-weighted
mean of those metrics becomes round k's ``evaluation`` (with ``evaluatedAt``)
and round k's record is reported again.

What changes for a job: round k is evaluated by round k+1's clients rather
than by a separate selection, and its evaluation is known one round later.
The job's last round (and a job that stops early on its privacy budget) is
evaluated by an exchange of its own, as before.  A round whose train tasks
bring no evaluation (every client's evaluation failed) has none.

Pure: tickets and history records in, values out; the driver does the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from coordinator.rounds import Ticket
from libs.records import RoundRecord

log = logging.getLogger(__name__)

EVALUATE_PREFIX = "evaluate/"
EVALUATE_SAMPLES = "nsfl.evaluate_samples"


def take_evaluation(tickets: Sequence[Ticket]) -> dict[str, float]:
    """Remove the evaluation metrics from ``tickets`` (their training metrics stay); their weighted mean."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for ticket in tickets:
        samples = ticket.metrics.pop(EVALUATE_SAMPLES, None)
        names = [name for name in ticket.metrics if name.startswith(EVALUATE_PREFIX)]
        weight = max(float(samples or 0.0), 1.0)
        for name in names:
            value = ticket.metrics.pop(name)
            short = name[len(EVALUATE_PREFIX) :]
            sums[short] = sums.get(short, 0.0) + weight * value
            weights[short] = weights.get(short, 0.0) + weight
    return {name: sums[name] / weights[name] for name in sorted(sums)}


class EvaluationPiggyback:
    """Which train rounds carry the previous round's evaluation (see the module docstring)."""

    def __init__(self, *, evaluate_every: int, rounds: int, enabled: bool = True) -> None:
        self.evaluate_every = evaluate_every
        self.rounds = rounds
        self.enabled = enabled and evaluate_every > 0

    def _due(self, round_number: int) -> bool:
        return self.enabled and round_number >= 1 and round_number % self.evaluate_every == 0

    def defers(self, round_number: int) -> bool:
        """Whether the evaluation after ``round_number`` is left to the next round's train tasks."""
        return self._due(round_number) and round_number < self.rounds

    def wanted(self, round_number: int, history: Sequence[RoundRecord]) -> bool:
        """Whether round ``round_number``'s train tasks should evaluate the model they are given."""
        if not self._due(round_number - 1) or not history:
            return False
        previous = history[-1]
        return previous.get("round") == round_number - 1 and "evaluation" not in previous

    def file(
        self,
        round_number: int,
        tickets: Sequence[Ticket],
        history: Sequence[RoundRecord],
        now: float,
    ) -> RoundRecord | None:
        """Take the evaluation from round ``round_number``'s tickets and give it to the previous
        round's record; that record if it changed, else None.  Call before recording this round."""
        wanted = self.wanted(round_number, history)
        metrics = take_evaluation(tickets)
        if not wanted:
            return None
        if not metrics:
            log.warning("round %d brought no evaluation of round %d's model", round_number, round_number - 1)
            return None
        previous = history[-1]
        previous["evaluation"] = metrics
        previous["evaluatedAt"] = now
        log.info(
            "evaluation after round %d (by round %d's clients): %s", round_number - 1, round_number, metrics
        )
        return previous
