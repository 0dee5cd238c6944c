"""The round's global model, encoded once and served many times.

Every route a model takes to an executor serves the same bytes: inside the
offers (:attr:`GlobalModel.inline`, a small model), inside the ``AwaitModel``
answers of tasks offered ahead (the same), and the ``DownloadModel`` stream
(:attr:`GlobalModel.payload`).  :class:`GlobalModel` encodes the weights, with
their attachments (SCAFFOLD's ``c``, broadcast files:
:mod:`libs.aggregation.attachments`), the first time any route asks, keeps
the bytes and their SHA-256 (content-addressed, DESIGN §5.2), and from then on
exposes the arrays as zero-copy read-only views into those bytes, so the
coordinator holds one copy of the model, not two.

Once, not per route and not per step: a model the round's record names but
nobody downloads (the aggregate before SCAFFOLD attaches ``c`` to it) is
hashed as it would be encoded, without building the bytes
(:func:`libs.weights.tensors.sha256_hex` over the weights), and the job's final
model is stored from the bytes the last round served.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from libs.aggregation.attachments import join
from libs.weights.tensors import decode, encode, encoded_size, sha256_hex

WeightMap = dict[str, np.ndarray]

# A global model up to this size travels inside the offers (TaskOffer.model) and the AwaitModel answers:
# its clients need no DownloadModel, which on a small model is a round trip longer than the transfer.
# Larger models are downloaded by each executor, so the selector never carries more than this per offer.
INLINE_MODEL_BYTES = 256 * 1024


class GlobalModel:
    """One round's published model: its weights, and its bytes encoded at most once (see the module docstring)."""

    def __init__(
        self, round_number: int, weights: WeightMap, attachments: Mapping[str, Mapping[str, np.ndarray]] | None = None
    ) -> None:
        self.round = round_number
        # The model owns these arrays: nothing writes to them (the bytes, encoded later, must be what an
        # earlier SHA-256 named), and once encoded they are read-only views into the bytes.
        self._weights = weights
        self._attachments = attachments
        self._payload: bytes | None = None
        self._sha256: str | None = None

    @classmethod
    def from_weights(cls, weights: WeightMap, round_number: int) -> GlobalModel:
        return cls(round_number, weights)

    def with_attachments(self, attachments: Mapping[str, Mapping[str, np.ndarray]]) -> GlobalModel:
        """The same model published with ``attachments`` beside it (another payload, another SHA-256).

        Encoded at once: the attachments (SCAFFOLD's ``c``) move at the round's end, the bytes must not.
        """
        published = GlobalModel(self.round, self._weights, attachments)
        assert published.payload
        return published

    def _published(self) -> Mapping[str, np.ndarray]:
        return join(self._weights, self._attachments) if self._attachments else self._weights

    @property
    def weights(self) -> WeightMap:
        """The model's arrays (without attachments); views into :attr:`payload` once it is encoded."""
        return self._weights

    @property
    def payload(self) -> bytes:
        """The safetensors bytes every route serves, encoded on first use and kept."""
        if self._payload is None:
            payload = encode(self._published())
            if self._sha256 is None:
                self._sha256 = sha256_hex(payload)
            decoded = decode(payload)
            self._weights = {name: decoded[name] for name in self._weights}  # one copy held, not two
            self._attachments = None  # they are in the bytes now
            self._payload = payload
        return self._payload

    @property
    def sha256(self) -> str:
        """The content id of :attr:`payload` (hashed without encoding when no route asked for the bytes yet)."""
        if self._sha256 is None:
            self._sha256 = sha256_hex(self._payload if self._payload is not None else self._published())
        return self._sha256

    @property
    def size(self) -> int:
        return len(self._payload) if self._payload is not None else encoded_size(self._published())

    @property
    def inline(self) -> bytes:
        """The bytes when small enough to travel inside a message (the offers, AwaitModel), else nothing."""
        return self.payload if self.size <= INLINE_MODEL_BYTES else b""
