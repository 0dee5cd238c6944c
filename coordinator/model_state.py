"""The round's global model, encoded once and served many times.

Executors download the global model every round; encoding it per request
would cost a copy and a hash per client.  :class:`GlobalModel` encodes the
weights once, keeps the bytes (content-addressed by SHA-256, DESIGN §5.2) and
exposes the arrays as zero-copy read-only views into those bytes, so the
coordinator holds one copy of the model, not two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from libs.weights.tensors import decode, encode, sha256_hex

WeightMap = dict[str, np.ndarray]


@dataclass
class GlobalModel:
    round: int
    payload: bytes
    sha256: str
    weights: WeightMap = field(repr=False)

    @classmethod
    def from_weights(cls, weights: WeightMap, round_number: int) -> GlobalModel:
        payload = encode(weights)
        return cls(round=round_number, payload=payload, sha256=sha256_hex(payload),
                   weights=decode(payload))

    @property
    def size(self) -> int:
        return len(self.payload)
