"""Weights as named numpy arrays, and their wire format (safetensors).

Every model that crosses a process boundary in nsfl -- global models, client
deltas, checkpoints -- is a :data:`WeightMap`: a ``dict`` from tensor name to
numpy array, ordered by name.  It is framework-neutral (``frameworks.py``
converts from and to PyTorch and Keras) and it is encoded in the safetensors
format (DESIGN §6), never with pickle.

Why our own codec instead of the ``safetensors`` package:

* **Zero copy.**  :func:`decode` returns numpy *views* into the received
  buffer, and :func:`iter_encoded` yields the header then each array's own
  memory, so a streamed model is never held twice in a process.  The package
  always builds a fresh ``bytes`` and fresh arrays.
* **Strict validation before touching data.**  A payload comes from another
  machine.  Every structural fact (header length, JSON, dtypes, shapes,
  offsets that tile the data section exactly) is checked before any view is
  made, and a failure is a :class:`~libs.errors.CorruptPayload` that says what
  exactly is wrong, so an operator can tell a truncated upload from a bug.
* **Deterministic bytes.**  The encoding is byte-identical to
  ``safetensors.numpy.save`` (same data order: larger dtypes first, then by
  name, which also keeps every array aligned to its item size; same compact
  JSON; header padded with spaces to 8 bytes).  Metadata keys are sorted, so
  equal weights always give the same SHA-256, which is the content id of a
  published model.  (The package writes metadata in hash-map order, so it
  agrees with us byte for byte only with at most one metadata key; both
  decoders read either.)

The format: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{str: str}}``, then the data section; offsets are relative to the data
section.  Supported dtypes: F16, F32, F64, I8-I64, U8-U64 and BOOL.  BF16 and
the FP8 types are refused: numpy has no native type for them, and a bf16
model is upcast to float32 by ``frameworks.py`` instead (lossless).

The gate every received update passes, :func:`validate_update`, lives in
``validation.py`` and is re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from libs.errors import CorruptPayload, InvalidWeights
from libs.weights.validation import check_compatible, non_finite_counts, validate_update

__all__ = [
    "MEDIA_TYPE",
    "SUPPORTED_DTYPES",
    "Buffer",
    "WeightMap",
    "check_compatible",
    "decode",
    "dtype_name",
    "encode",
    "encoded_size",
    "iter_encoded",
    "non_finite_counts",
    "read_metadata",
    "sha256_hex",
    "validate_update",
]

WeightMap: TypeAlias = dict[str, np.ndarray]
"""Named arrays, ordered by name."""

Buffer: TypeAlias = bytes | bytearray | memoryview

MEDIA_TYPE = "application/vnd.nsfl.safetensors"
METADATA_KEY = "__metadata__"
MAX_HEADER_BYTES = 100_000_000  # the limit of the safetensors package

# numpy's (kind, itemsize) -> safetensors dtype name.
_NAME_OF: dict[tuple[str, int], str] = {
    ("f", 2): "F16", ("f", 4): "F32", ("f", 8): "F64",
    ("i", 1): "I8", ("i", 2): "I16", ("i", 4): "I32", ("i", 8): "I64",
    ("u", 1): "U8", ("u", 2): "U16", ("u", 4): "U32", ("u", 8): "U64",
    ("b", 1): "BOOL",
}  # fmt: skip
_NUMPY_DTYPE: dict[str, np.dtype] = {
    name: np.dtype(f"{'?' if kind == 'b' else kind + str(size)}").newbyteorder("<")
    for (kind, size), name in _NAME_OF.items()
}
SUPPORTED_DTYPES: frozenset[str] = frozenset(_NUMPY_DTYPE)
# The order of the safetensors package's Dtype enum; data is laid out from the
# highest rank down, then by name, exactly as ``safetensors.numpy.save`` does.
_RANK = {name: i for i, name in enumerate(
    ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]
)}  # fmt: skip
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})


def dtype_name(dtype: np.dtype) -> str:
    """The safetensors name of a numpy dtype; :class:`InvalidWeights` if it has none."""
    name = _NAME_OF.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise InvalidWeights(
            f"dtype {dtype} cannot be encoded; supported: {', '.join(sorted(SUPPORTED_DTYPES))}"
        )
    return name


# --------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class _Layout:
    prefix: bytes  # length + JSON header + padding
    arrays: list[np.ndarray]  # in data order, not yet normalised
    data_size: int


def _layout(weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> _Layout:
    entries: list[tuple[int, str, str, np.ndarray]] = []
    for name, array in weights.items():
        if not isinstance(name, str) or name == METADATA_KEY:
            raise InvalidWeights(f"tensor name {name!r} is not allowed")
        if not isinstance(array, np.ndarray):
            raise InvalidWeights(f"tensor {name!r} is a {type(array).__name__}, expected a numpy array")
        try:
            dtype = dtype_name(array.dtype)
        except InvalidWeights as exc:
            raise InvalidWeights(f"tensor {name!r}: {exc.message}") from None
        entries.append((-_RANK[dtype], name, dtype, array))
    entries.sort(key=lambda entry: (entry[0], entry[1]))

    header: dict[str, Any] = {}
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise InvalidWeights("metadata must map strings to strings")
        header[METADATA_KEY] = dict(sorted(metadata.items()))
    offset = 0
    for _, name, dtype, array in entries:
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    try:
        text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidWeights(f"a tensor name or metadata entry is not valid unicode: {exc}") from None
    text += b" " * (-len(text) % 8)
    return _Layout(len(text).to_bytes(8, "little") + text, [entry[3] for entry in entries], offset)


def _raw_bytes(array: np.ndarray) -> memoryview:
    """The array's bytes, C-contiguous little-endian; copies only if it is not so already."""
    little = array.dtype.newbyteorder("<")
    if array.dtype != little:
        array = array.astype(little)
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def encoded_size(weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> int:
    """The size in bytes of :func:`encode`'s result, without encoding."""
    layout = _layout(weights, metadata)
    return len(layout.prefix) + layout.data_size


def iter_encoded(
    weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> Iterator[memoryview]:
    """The encoding as pieces: the header, then each array's memory (no copy for
    C-contiguous little-endian arrays).  Empty arrays yield nothing."""
    layout = _layout(weights, metadata)
    yield memoryview(layout.prefix)
    for array in layout.arrays:
        if array.nbytes:
            yield _raw_bytes(array)


def encode(weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors encoding of ``weights`` (one copy of the data)."""
    return b"".join(iter_encoded(weights, metadata))


def sha256_hex(data: Buffer | Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> str:
    """Hex SHA-256 of a payload, or of the encoding of a weight map (computed
    piece by piece, without building the encoding)."""
    digest = hashlib.sha256()
    if isinstance(data, bytes | bytearray | memoryview):
        digest.update(data)
    else:
        for piece in iter_encoded(data, metadata):
            digest.update(piece)
    return digest.hexdigest()


# --------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _byte_view(buffer: Buffer) -> memoryview:
    view = memoryview(buffer)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


class _TooManyTensors(Exception):
    pass


class _HeaderObjects:
    """``object_pairs_hook`` that refuses repeated keys and stops parsing early
    once a header holds more objects than ``max_tensors`` allows."""

    def __init__(self, max_tensors: int) -> None:
        self.left = max_tensors + 2  # the top level and __metadata__

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self.left -= 1
        if self.left < 0:
            raise _TooManyTensors
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise CorruptPayload(f"header repeats the key {key!r}")
            result[key] = value
        return result


def _read_header(view: memoryview, max_tensors: int) -> tuple[dict[str, Any], int]:
    """The parsed JSON header and the start of the data section."""
    if len(view) < 8:
        raise CorruptPayload(f"payload is {len(view)} bytes; a safetensors payload has at least 8")
    size = int.from_bytes(view[:8], "little")
    if size > MAX_HEADER_BYTES:
        raise CorruptPayload(f"header length {size} exceeds the limit of {MAX_HEADER_BYTES} bytes")
    if 8 + size > len(view):
        raise CorruptPayload(f"header length {size} runs past the end of the {len(view)}-byte payload")
    try:
        text = bytes(view[8 : 8 + size]).decode("utf-8")
        header = json.loads(text, object_pairs_hook=_HeaderObjects(max_tensors))
    except _TooManyTensors:
        raise CorruptPayload(f"header lists more than {max_tensors} tensors, the limit") from None
    except UnicodeDecodeError as exc:
        raise CorruptPayload(f"header is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    except (ValueError, RecursionError) as exc:
        raise CorruptPayload(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise CorruptPayload(f"header is a JSON {type(header).__name__}, expected an object")
    return header, 8 + size


def _parse_metadata(header: Mapping[str, Any]) -> dict[str, str]:
    metadata = header.get(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CorruptPayload(f"{METADATA_KEY} must map strings to strings")
    return dict(metadata)


def _parse_entry(name: str, entry: object, allowed_dtypes: Collection[str]) -> _Entry:
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise CorruptPayload(f"tensor {name!r}: expected keys dtype, shape, data_offsets, got {keys}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _NUMPY_DTYPE:
        raise CorruptPayload(f"tensor {name!r}: unknown dtype {dtype!r}")
    if dtype not in allowed_dtypes:
        raise CorruptPayload(f"tensor {name!r}: dtype {dtype} is not allowed here")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise CorruptPayload(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise CorruptPayload(
            f"tensor {name!r}: data_offsets must be two non-negative integers, got {offsets!r}"
        )
    begin, end = offsets
    if begin > end:
        raise CorruptPayload(f"tensor {name!r}: data_offsets [{begin}, {end}] end before they begin")
    needed = math.prod(shape) * _NUMPY_DTYPE[dtype].itemsize
    if needed != end - begin:
        raise CorruptPayload(
            f"tensor {name!r}: shape {shape} of {dtype} needs {needed} bytes "
            f"but data_offsets [{begin}, {end}] span {end - begin}"
        )
    return _Entry(name, dtype, tuple(shape), begin, end)


def _check_tiling(entries: list[_Entry], data_size: int) -> None:
    """Offsets must tile the data section exactly: from 0, no gap, no overlap."""
    position, previous = 0, None
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if entry.begin < position:
            raise CorruptPayload(
                f"tensors {previous!r} and {entry.name!r} overlap: "
                f"{previous!r} ends at {position}, {entry.name!r} begins at {entry.begin}"
            )
        if entry.begin > position:
            raise CorruptPayload(
                f"gap of {entry.begin - position} bytes in the data before tensor {entry.name!r}"
            )
        position, previous = entry.end, entry.name
    if position != data_size:
        raise CorruptPayload(f"tensors cover {position} bytes but the data section holds {data_size}")


def decode(
    buffer: Buffer,
    *,
    max_tensors: int = 100_000,
    copy: bool = False,
    allowed_dtypes: Collection[str] = SUPPORTED_DTYPES,
) -> WeightMap:
    """Decode a safetensors payload, checking its whole structure first.

    With ``copy=False`` the arrays are views into ``buffer`` (read-only when
    the buffer is): nothing is copied, and the buffer stays alive as long as
    any array does.  With ``copy=True`` each array owns its memory.
    """
    view = _byte_view(buffer)
    header, data_start = _read_header(view, max_tensors)
    _parse_metadata(header)
    entries = [
        _parse_entry(name, entry, allowed_dtypes) for name, entry in header.items() if name != METADATA_KEY
    ]
    if len(entries) > max_tensors:
        raise CorruptPayload(f"header lists {len(entries)} tensors, more than the limit of {max_tensors}")
    _check_tiling(entries, len(view) - data_start)

    weights: WeightMap = {}
    for entry in sorted(entries, key=lambda e: e.name):
        dtype = _NUMPY_DTYPE[entry.dtype]
        count = (entry.end - entry.begin) // dtype.itemsize
        array = np.frombuffer(view, dtype=dtype, count=count, offset=data_start + entry.begin).reshape(
            entry.shape
        )
        if entry.dtype == "BOOL" and count and array.view(np.uint8).max() > 1:
            raise CorruptPayload(f"tensor {entry.name!r}: BOOL data holds bytes other than 0 and 1")
        weights[entry.name] = array.copy() if copy else array
    return weights


def read_metadata(buffer: Buffer) -> dict[str, str]:
    """The ``__metadata__`` of a payload ({} if it has none), reading only the header."""
    header, _ = _read_header(_byte_view(buffer), max_tensors=100_000)
    return _parse_metadata(header)
