"""A PNG of evaluation accuracy and loss per round, from ``GET .../jobs/{name}/metrics``.

matplotlib is imported lazily and with the ``Agg`` backend: the CLI must
start fast for every other command, and the demo may run on a machine with
no display (a CI runner, an SSH session), where an interactive backend
would fail or pop up a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RoundMetrics:
    round: int
    accuracy: float | None
    loss: float | None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _or_nan(value: float | None) -> float:
    """A missing value as NaN, which matplotlib draws as a gap."""
    return math.nan if value is None else value


def round_metrics(records: Sequence[Mapping[str, Any]]) -> list[RoundMetrics]:
    """The evaluated rounds of a job's round records, in round order."""
    found = []
    for record in records:
        evaluation = record.get("evaluation")
        number = record.get("round")
        if not isinstance(evaluation, Mapping) or not isinstance(number, int):
            continue
        accuracy, loss = _number(evaluation.get("accuracy")), _number(evaluation.get("loss"))
        if accuracy is not None or loss is not None:
            found.append(RoundMetrics(number, accuracy, loss))
    return sorted(found, key=lambda m: m.round)


def plot_accuracy_loss(metrics: Sequence[RoundMetrics], path: Path, *, title: str) -> Path:
    """Write accuracy (left axis) and loss (right axis) per round to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, accuracy_axis = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        rounds = [m.round for m in metrics]
        accuracy_axis.plot(
            rounds, [_or_nan(m.accuracy) for m in metrics], "o-", color="tab:blue", label="accuracy"
        )
        accuracy_axis.set_xlabel("round")
        accuracy_axis.set_ylabel("accuracy", color="tab:blue")
        accuracy_axis.set_ylim(0.0, 1.0)
        accuracy_axis.set_xticks(rounds)
        loss_axis = accuracy_axis.twinx()
        loss_axis.plot(rounds, [_or_nan(m.loss) for m in metrics], "s--", color="tab:red", label="loss")
        loss_axis.set_ylabel("loss", color="tab:red")
        accuracy_axis.set_title(title)
        accuracy_axis.grid(True, alpha=0.3)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
    return path
