"""Model weights: the neutral map of named arrays, its safetensors wire format,
arithmetic on deltas, framework converters and chunked streaming.

Only the pure, dependency-light parts are re-exported here (numpy and the
standard library).  ``libs.weights.streaming`` (gRPC) and
``libs.weights.frameworks`` (PyTorch/Keras, imported lazily) are imported by
name where they are needed, so that importing ``libs.weights`` in an
aggregator costs nothing it does not use.
"""

from libs.weights.deltas import apply_delta, clip_by_norm, compute_delta, l2_norm, zeros_like
from libs.weights.tensors import (
    MEDIA_TYPE,
    SUPPORTED_DTYPES,
    WeightMap,
    check_compatible,
    decode,
    encode,
    encoded_size,
    iter_encoded,
    read_metadata,
    sha256_hex,
    validate_update,
)

__all__ = [
    "MEDIA_TYPE",
    "SUPPORTED_DTYPES",
    "WeightMap",
    "apply_delta",
    "check_compatible",
    "clip_by_norm",
    "compute_delta",
    "decode",
    "encode",
    "encoded_size",
    "iter_encoded",
    "l2_norm",
    "read_metadata",
    "sha256_hex",
    "validate_update",
    "zeros_like",
]
