"""Federated digits classifier in function mode: the executor calls ``train``/``evaluate``/``init``.

The same model and training as ``train.py``, written as functions of a
:class:`task_executor.context.TaskContext` instead of a script with SDK calls.
The context brings the round's global weights (``ctx.load_into(model)``), the
job's parameters, the dataset paths and ``ctx.cache``, a dict that outlives
one task in the same process: the data is parsed once per process and reused
when an executor serves several rounds.

A task manager config selects this mode with ``mode: function``.
"""

import os
from typing import Any

import numpy as np
import torch
from torch import nn


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def load_split(ctx: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    path = os.path.join(ctx.dataset_path("digits"), f"{name}.npz")
    key = f"digits-pytorch:{path}"
    if key not in ctx.cache:
        with np.load(path) as data:
            ctx.cache[key] = (torch.from_numpy(data["x"]), torch.from_numpy(data["y"]))
    x, y = ctx.cache[key]
    return x, y


def init(ctx: Any) -> nn.Module:
    """The initial model for a job without one (the executor seeded the generators from the job id)."""
    return build_model()


def train(ctx: Any) -> tuple[nn.Module, int, dict[str, float]]:
    model = build_model()
    ctx.load_into(model)
    x, y = load_split(ctx, "train")
    epochs, lr = int(ctx.parameter("epochs", 1)), float(ctx.parameter("lr", 0.1))
    batch_size = int(ctx.parameter("batch_size", 16))
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
    return model, len(y), {"loss": total / max(seen, 1)}


@torch.no_grad()
def evaluate(ctx: Any) -> tuple[dict[str, float], int]:
    model = build_model()
    ctx.load_into(model)
    model.eval()
    x, y = load_split(ctx, "test")
    logits = model(x)
    metrics = {
        "accuracy": (logits.argmax(dim=1) == y).float().mean().item(),
        "loss": nn.functional.cross_entropy(logits, y).item(),
    }
    return metrics, len(y)
