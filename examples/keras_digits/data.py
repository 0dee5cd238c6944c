"""The digits client datasets, for the Keras example: the same files as the PyTorch example's.

``python -m examples.keras_digits.data --out DIR --clients 3 --split iid|noniid --seed 0``.
The layout (``client-<i>/train.npz``, ``client-<i>/test.npz``,
``heldout/test.npz``) holds framework-neutral numpy arrays, so both examples
read the same directories; see :mod:`examples.pytorch_digits.data`.
"""

from examples.pytorch_digits.data import main, write_splits

__all__ = ["main", "write_splits"]

if __name__ == "__main__":
    main()
