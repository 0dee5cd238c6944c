"""Simulate the Keras digits job offline (FedAvg over this example's own code, no network).

``python -m examples.keras_digits.simulate --clients 3 --rounds 5 --split iid [--mode function]``;
see :mod:`examples.pytorch_digits.simulate` for what it runs.
"""

from pathlib import Path

from examples.pytorch_digits.simulate import main as simulate_main


def main(argv: list[str] | None = None) -> None:
    simulate_main(argv, entry_dir=Path(__file__).resolve().parent, runtime="tensorflow")


if __name__ == "__main__":
    main()
