"""Secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning") as pure state machines.

The server learns only the sum of the clients' fixed-point encoded updates;
with ``double-mask`` it survives up to ``n - t`` dropouts, with ``one-mask``
(cross-silo) any dropout aborts.  Nothing here does I/O: the coordinator and
the task executor relay the messages of :mod:`libs.secagg.messages`.

Modules, bottom-up: :mod:`~libs.secagg.prg` (AES-CTR mask expansion),
:mod:`~libs.secagg.shamir` (t-of-n sharing), :mod:`~libs.secagg.key_agreement`
(X25519, HKDF, ChaCha20-Poly1305), :mod:`~libs.secagg.quantize` and
:mod:`~libs.secagg.layout` (floats to the ring and back),
:mod:`~libs.secagg.wire` and :mod:`~libs.secagg.messages` (what travels),
:mod:`~libs.secagg.protocol` (shared rules), :mod:`~libs.secagg.client`,
:mod:`~libs.secagg.server`, and :mod:`~libs.secagg.simulation` (an in-memory
round for tests and benchmarks).
"""

from libs.secagg.client import SecAggClient
from libs.secagg.errors import ModelMismatch, ProtocolViolation, RoundAborted, StageOutOfOrder
from libs.secagg.layout import ParameterLayout, WeightMap
from libs.secagg.messages import (
    KeyAdvertisement,
    KeyDirectory,
    MaskedInput,
    Mode,
    RoundSetup,
    ShareDelivery,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from libs.secagg.protocol import ClientStage, ServerStage, model_digest
from libs.secagg.quantize import DecodedSum, FixedPointCodec
from libs.secagg.server import AggregateResult, SecAggServer

__all__ = [
    "AggregateResult",
    "ClientStage",
    "DecodedSum",
    "FixedPointCodec",
    "KeyAdvertisement",
    "KeyDirectory",
    "MaskedInput",
    "Mode",
    "ModelMismatch",
    "ParameterLayout",
    "ProtocolViolation",
    "RoundAborted",
    "RoundSetup",
    "SecAggClient",
    "SecAggServer",
    "ServerStage",
    "ShareDelivery",
    "ShareKeys",
    "StageOutOfOrder",
    "UnmaskRequest",
    "UnmaskResponse",
    "WeightMap",
    "model_digest",
]
