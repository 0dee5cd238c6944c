"""Federated digits classifier: an ordinary Keras 3 training script plus four nsfl calls.

Run by an nsfl task executor on each client (script mode).  The same file
serves the three kinds of task: ``train`` (local epochs from the round's
global model), ``evaluate`` (accuracy and loss of the global model on the
client's held-out split) and ``init`` (the job has no initial model:
``nsfl.load_weights`` captures the freshly built one and ends the script).

Build the model with an ``Input`` so its weights exist before
``nsfl.load_weights``.  The client's dataset ``digits`` is a directory with
``train.npz`` and ``test.npz`` (``python -m examples.keras_digits.data``).
Parameters from the job spec: ``epochs`` (1), ``lr`` (0.1), ``batch_size`` (16).

Client-side algorithms are one call each, after ``compile``: ``nsfl.fedprox(model)``
and ``nsfl.scaffold(model)`` wrap the compiled optimiser only when the job's
``aggregation.name`` is ``fedprox`` or ``scaffold`` (and do nothing otherwise).
"""

import os

import keras
import nsfl
import numpy as np


def build_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=(64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def load_split(name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(os.path.join(nsfl.get_dataset_path("digits"), f"{name}.npz")) as data:
        return data["x"], data["y"]


def compile_model(model: keras.Model, lr: float) -> None:
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def main() -> None:
    model = build_model()
    nsfl.load_weights(model)  # the round's global model
    compile_model(model, lr=float(nsfl.get_parameter("lr", 0.1)))

    if nsfl.is_evaluation():
        x, y = load_split("test")
        loss, accuracy = model.evaluate(x, y, batch_size=256, verbose=0)
        nsfl.commit_metrics({"accuracy": accuracy, "loss": loss}, num_samples=len(y))
        return

    x, y = load_split("train")
    nsfl.fedprox(model)  # the proximal term mu/2 ||w - w_global||^2, if the job asks for FedProx
    nsfl.scaffold(model)  # SCAFFOLD's drift correction c - c_i, if the job asks for SCAFFOLD
    history = model.fit(
        x,
        y,
        epochs=int(nsfl.get_parameter("epochs", 1)),
        batch_size=int(nsfl.get_parameter("batch_size", 16)),
        shuffle=True,
        verbose=0,
    )
    nsfl.commit_weights(model, num_samples=len(y))
    nsfl.commit_metrics({"loss": history.history["loss"][-1]})


if __name__ == "__main__":
    main()
