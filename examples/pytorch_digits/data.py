"""Split scikit-learn's bundled digits into per-client datasets for the examples.

``python -m examples.pytorch_digits.data --out DIR --clients 3 --split iid --seed 0`` writes::

    DIR/client-0/train.npz   DIR/client-0/test.npz     (one client's share, split 80/20)
    DIR/client-1/...
    DIR/heldout/test.npz                               (a common held-out test set, 20% of all)
    DIR/manifest.json                                  (sample and label counts per client)

Each ``.npz`` holds two plain numeric arrays, ``x`` (float32, n x 64, pixel
values scaled to [0, 1]) and ``y`` (int64 labels 0-9), so a training script
reads it with ``np.load(path)``, which never unpickles anything.  A client's
task manager config then declares ``datasets: {digits: DIR/client-<i>}``.

``--split iid`` deals the shuffled samples out evenly.  ``--split noniid``
skews labels the usual way (Hsu et al. 2019): for each digit, the shares of
its samples across clients are drawn from a Dirichlet(alpha) distribution,
``alpha = 0.5`` by default, so each client sees mostly a few digits.  The
held-out set is stratified and identical for both splits, so results are
comparable.  No network access: the digits ship with scikit-learn.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HELDOUT_FRACTION = 0.2
LOCAL_TEST_FRACTION = 0.2
MIN_CLIENT_SAMPLES = 20


@dataclass(frozen=True)
class Split:
    x: np.ndarray
    y: np.ndarray


def load_all() -> Split:
    digits = load_digits()
    return Split(np.asarray(digits.data, np.float32) / 16.0, np.asarray(digits.target, np.int64))


def iid_shares(labels: np.ndarray, clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.sort(share) for share in np.array_split(rng.permutation(len(labels)), clients)]


def dirichlet_shares(
    labels: np.ndarray, clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Label-skewed shares; redrawn until every client has ``MIN_CLIENT_SAMPLES`` samples."""
    for _ in range(1000):
        shares: list[list[int]] = [[] for _ in range(clients)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha)))[:-1] * len(members)).astype(int)
            for client, part in enumerate(np.split(members, cuts)):
                shares[client].extend(part.tolist())
        if min(len(share) for share in shares) >= MIN_CLIENT_SAMPLES:
            return [np.sort(np.asarray(share, np.int64)) for share in shares]
    raise ValueError(f"cannot give {clients} clients {MIN_CLIENT_SAMPLES} samples each with alpha={alpha}")


def _save(directory: Path, name: str, split: Split) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / f"{name}.npz", x=split.x, y=split.y)


def write_splits(
    out: Path, clients: int, split: str, seed: int, alpha: float = 0.5
) -> dict[str, dict[str, Any]]:
    """Write the layout above; what each client got (also in ``manifest.json``)."""
    if clients < 1:
        raise ValueError("--clients must be at least 1")
    data = load_all()
    rng = np.random.default_rng(seed)
    pool, heldout = train_test_split(
        np.arange(len(data.y)), test_size=HELDOUT_FRACTION, stratify=data.y, random_state=seed
    )
    _save(out / "heldout", "test", Split(data.x[heldout], data.y[heldout]))
    pool_labels = data.y[pool]
    shares = (
        iid_shares(pool_labels, clients, rng)
        if split == "iid"
        else dirichlet_shares(pool_labels, clients, alpha, rng)
    )
    written: dict[str, dict[str, Any]] = {}
    for client, share in enumerate(shares):
        members = pool[share]
        local_train, local_test = train_test_split(members, test_size=LOCAL_TEST_FRACTION, random_state=seed)
        directory = out / f"client-{client}"
        _save(directory, "train", Split(data.x[local_train], data.y[local_train]))
        _save(directory, "test", Split(data.x[local_test], data.y[local_test]))
        written[f"client-{client}"] = {
            "path": str(directory),
            "train": len(local_train),
            "test": len(local_test),
            "labels": np.bincount(data.y[members], minlength=10).tolist(),
        }
    manifest = {"split": split, "seed": seed, "heldout": len(heldout), "clients": written}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the client datasets to")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--split", choices=("iid", "noniid"), default="iid")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration for --split noniid")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = write_splits(args.out, args.clients, args.split, args.seed, args.alpha)
    for name, info in written.items():
        print(f"{name}: {info['train']} train / {info['test']} test, labels {info['labels']}")
    print(f"heldout test set in {args.out / 'heldout'}")


if __name__ == "__main__":
    main()
