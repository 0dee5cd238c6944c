"""Federated digits classifier: an ordinary PyTorch training script plus four nsfl calls.

Run by an nsfl task executor on each client (script mode).  The same file
serves the three kinds of task: ``train`` (one or more local epochs from the
round's global model), ``evaluate`` (accuracy and loss of the global model on
the client's held-out split) and ``init`` (the job has no initial model:
``nsfl.load_weights`` captures the freshly built one and ends the script).

The client's dataset ``digits`` is a directory with ``train.npz`` and
``test.npz`` (``python -m examples.pytorch_digits.data`` makes them).
Parameters from the job spec: ``epochs`` (1), ``lr`` (0.1), ``batch_size`` (16).

Client-side algorithms are one call each: ``nsfl.fedprox(model)`` and
``nsfl.scaffold(model)`` change the gradients only when the job's
``aggregation.name`` is ``fedprox`` or ``scaffold`` (and do nothing
otherwise), so this one script serves every aggregation a job may choose.
"""

import os

import nsfl
import numpy as np
import torch
from torch import nn


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def load_split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(os.path.join(nsfl.get_dataset_path("digits"), f"{name}.npz")) as data:
        return torch.from_numpy(data["x"]), torch.from_numpy(data["y"])


def train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int
) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total, seen = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            seen += len(batch)
    return total / max(seen, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    logits = model(x)
    return {
        "accuracy": (logits.argmax(dim=1) == y).float().mean().item(),
        "loss": nn.functional.cross_entropy(logits, y).item(),
    }


def main() -> None:
    model = build_model()
    nsfl.load_weights(model)  # the round's global model

    if nsfl.is_evaluation():
        x, y = load_split("test")
        nsfl.commit_metrics(evaluate(model, x, y), num_samples=len(y))
        return

    x, y = load_split("train")
    nsfl.fedprox(model)  # the proximal term mu/2 ||w - w_global||^2, if the job asks for FedProx
    nsfl.scaffold(model)  # SCAFFOLD's drift correction c - c_i, if the job asks for SCAFFOLD
    loss = train(
        model,
        x,
        y,
        epochs=int(nsfl.get_parameter("epochs", 1)),
        lr=float(nsfl.get_parameter("lr", 0.1)),
        batch_size=int(nsfl.get_parameter("batch_size", 16)),
    )
    nsfl.commit_weights(model, num_samples=len(y))
    nsfl.commit_metrics({"loss": loss})


if __name__ == "__main__":
    main()
