"""Federated digits classifier in function mode, Keras 3: the executor calls ``train``/``evaluate``/``init``.

The same model and training as ``train.py``, written as functions of a
:class:`task_executor.context.TaskContext`: the context brings the round's
global weights (``ctx.load_into(model)``), the job's parameters, the dataset
paths and ``ctx.cache``, a dict that outlives one task in the same process,
so the data is parsed once when an executor serves several rounds.

A task manager config selects this mode with ``mode: function``.
"""

import os
from typing import Any

import keras
import numpy as np


def build_model(lr: float) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(shape=(64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def load_split(ctx: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    path = os.path.join(ctx.dataset_path("digits"), f"{name}.npz")
    key = f"digits-keras:{path}"
    if key not in ctx.cache:
        with np.load(path) as data:
            ctx.cache[key] = (data["x"], data["y"])
    x, y = ctx.cache[key]
    return x, y


def init(ctx: Any) -> keras.Model:
    """The initial model for a job without one (the executor seeded the generators from the job id)."""
    return build_model(lr=0.1)


def train(ctx: Any) -> tuple[keras.Model, int, dict[str, float]]:
    model = build_model(lr=float(ctx.parameter("lr", 0.1)))
    ctx.load_into(model)
    x, y = load_split(ctx, "train")
    history = model.fit(
        x,
        y,
        epochs=int(ctx.parameter("epochs", 1)),
        batch_size=int(ctx.parameter("batch_size", 16)),
        shuffle=True,
        verbose=0,
    )
    return model, len(y), {"loss": history.history["loss"][-1]}


def evaluate(ctx: Any) -> tuple[dict[str, float], int]:
    model = build_model(lr=0.1)
    ctx.load_into(model)
    x, y = load_split(ctx, "test")
    loss, accuracy = model.evaluate(x, y, batch_size=256, verbose=0)
    return {"accuracy": accuracy, "loss": loss}, len(y)
