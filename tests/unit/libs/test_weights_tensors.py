"""The safetensors codec and the update gate of libs.weights.tensors."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from libs.errors import CorruptPayload, InvalidWeights
from libs.weights.tensors import (
    decode,
    encode,
    encoded_size,
    iter_encoded,
    read_metadata,
    sha256_hex,
    validate_update,
)


def every_dtype() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "layer.0.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "layer.0.bias": rng.standard_normal(4).astype(np.float64),
        "half": rng.standard_normal((2, 2)).astype(np.float16),
        "i8": np.array([-128, 0, 127], np.int8),
        "i16": np.array([-3, 4], np.int16),
        "i32": np.array([[1, -2]], np.int32),
        "i64": np.array(123456789012, np.int64),
        "u8": np.array([0, 255], np.uint8),
        "u16": np.array([65535], np.uint16),
        "u32": np.array([1, 2, 3], np.uint32),
        "u64": np.array([2**64 - 1], np.uint64),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 5), np.float32),
    }


def assert_same(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> None:
    assert list(left) == list(right)
    for name in left:
        assert left[name].dtype == right[name].dtype, name
        assert left[name].shape == right[name].shape, name
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def payload_with(header: Any, data: bytes = b"") -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def f32_entry(shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


# ------------------------------------------------------------------ round trips


def test_encoding_then_decoding_gives_back_every_dtype_sorted_by_name() -> None:
    weights = every_dtype()
    decoded = decode(encode(weights))
    assert_same(decoded, dict(sorted(weights.items())))


def test_encoding_is_byte_identical_to_the_safetensors_package() -> None:
    weights = every_dtype()
    assert encode(weights) == st_save(weights)
    assert encode(weights, {"round": "3"}) == st_save(weights, metadata={"round": "3"})


def test_safetensors_package_reads_our_encoding_and_we_read_its() -> None:
    weights = every_dtype()
    assert_same(dict(sorted(st_load(encode(weights)).items())), dict(sorted(weights.items())))
    assert_same(decode(st_save(weights, metadata={"a": "1", "b": "2"})), dict(sorted(weights.items())))


def test_non_contiguous_and_big_endian_arrays_are_encoded_in_c_order_little_endian() -> None:
    weights = {"t": np.arange(12.0).reshape(3, 4).T, "be": np.arange(3, dtype=">i4")}
    decoded = decode(encode(weights))
    np.testing.assert_array_equal(decoded["t"], weights["t"])
    np.testing.assert_array_equal(decoded["be"], [0, 1, 2])
    assert decoded["be"].dtype == np.dtype("<i4")


def test_encoded_size_and_pieces_match_the_encoding_and_pieces_share_array_memory() -> None:
    weights = every_dtype()
    pieces = list(iter_encoded(weights, {"k": "v"}))
    assert b"".join(pieces) == encode(weights, {"k": "v"})
    assert encoded_size(weights, {"k": "v"}) == len(encode(weights, {"k": "v"}))
    big = np.ones(1000, np.float32)
    (piece,) = list(iter_encoded({"big": big}))[1:]
    assert np.shares_memory(np.frombuffer(piece, np.float32), big)


def test_header_is_padded_to_eight_bytes_with_spaces() -> None:
    encoded = encode({"x": np.zeros(1, np.float32)})
    size = struct.unpack("<Q", encoded[:8])[0]
    assert size % 8 == 0
    assert encoded[8 : 8 + size].endswith(b" ")


def test_decoding_bytes_gives_read_only_views_into_the_buffer() -> None:
    encoded = encode({"x": np.arange(4, dtype=np.float32)})
    array = decode(encoded)["x"]
    assert not array.flags.writeable
    assert np.shares_memory(array, np.frombuffer(encoded, np.uint8))


def test_decoding_a_bytearray_gives_writable_views_and_copy_gives_owned_arrays() -> None:
    buffer = bytearray(encode({"x": np.arange(4, dtype=np.float32)}))
    view = decode(buffer)["x"]
    view[0] = 42
    assert decode(buffer)["x"][0] == 42
    owned = decode(buffer, copy=True)["x"]
    assert owned.flags.owndata and owned.flags.writeable
    assert not np.shares_memory(owned, view)


def test_metadata_is_read_from_the_header_alone() -> None:
    encoded = encode({"x": np.zeros(2, np.float32)}, {"job": "j1", "round": "4"})
    assert read_metadata(encoded) == {"job": "j1", "round": "4"}
    assert read_metadata(encode({"x": np.zeros(2, np.float32)})) == {}


def test_equal_weights_have_the_same_sha256_whether_encoded_or_not() -> None:
    weights = every_dtype()
    assert sha256_hex(weights, {"a": "1", "b": "2"}) == sha256_hex(encode(weights, {"b": "2", "a": "1"}))
    assert sha256_hex(memoryview(encode(weights))) == sha256_hex(weights)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"x": np.zeros(2, np.complex64)}, "tensor 'x': dtype complex64 cannot be encoded"),
        ({"x": np.array(["a"], dtype=object)}, "cannot be encoded"),
        ({"x": [1.0, 2.0]}, "tensor 'x' is a list, expected a numpy array"),
        ({"__metadata__": np.zeros(1)}, "not allowed"),
    ],
)
def test_encoding_refuses_what_safetensors_cannot_hold(weights: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidWeights, match=message):
        encode(weights)


# ------------------------------------------------------------------- corruption


def test_a_header_length_past_the_end_is_corrupt() -> None:
    encoded = encode({"x": np.zeros(2, np.float32)})
    with pytest.raises(CorruptPayload, match=r"header length 1000 runs past the end of the \d+-byte payload"):
        decode(struct.pack("<Q", 1000) + encoded[8:])


def test_a_payload_shorter_than_the_length_prefix_is_corrupt() -> None:
    with pytest.raises(CorruptPayload, match="payload is 3 bytes"):
        decode(b"\x01\x02\x03")


def test_a_truncated_data_section_is_corrupt() -> None:
    encoded = encode({"x": np.zeros(4, np.float32)})
    with pytest.raises(CorruptPayload, match="tensors cover 16 bytes but the data section holds 12"):
        decode(encoded[:-4])


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b'{"x": ', "header is not valid JSON"),
        (b"\xff\xfe{}", "header is not valid UTF-8"),
        (b"[1, 2]", "header is a JSON list, expected an object"),
        (b'{"x": {}, "x": {}}', "header repeats the key 'x'"),
        ({"__metadata__": {"a": 1}}, "__metadata__ must map strings to strings"),
        ({"x": {"dtype": "F32", "shape": [1]}}, "tensor 'x': expected keys dtype, shape, data_offsets"),
        (
            {"x": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}},
            "tensor 'x': unknown dtype 'F8_E4M3'",
        ),
        (
            {"x": f32_entry([-1], 0, 0)},
            r"tensor 'x': shape must be a list of non-negative integers, got \[-1\]",
        ),
        ({"x": f32_entry([1.5], 0, 4)}, "shape must be a list of non-negative integers"),  # type: ignore[list-item]
        ({"x": f32_entry([True], 0, 4)}, "shape must be a list of non-negative integers"),
        ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, "data_offsets must be two non-negative"),
        ({"x": f32_entry([1], 4, 0)}, r"data_offsets \[4, 0\] end before they begin"),
    ],
)
def test_a_malformed_header_is_corrupt_and_says_what_is_wrong(header: Any, message: str) -> None:
    with pytest.raises(CorruptPayload, match=message):
        decode(payload_with(header, bytes(4)))


def test_a_shape_that_does_not_match_its_byte_length_is_corrupt() -> None:
    header = {"x": f32_entry([2, 3], 0, 20)}
    with pytest.raises(
        CorruptPayload, match=r"shape \[2, 3\] of F32 needs 24 bytes but data_offsets \[0, 20\] span 20"
    ):
        decode(payload_with(header, bytes(20)))


def test_overlapping_offsets_are_corrupt() -> None:
    header = {"a": f32_entry([2], 0, 8), "b": f32_entry([2], 4, 12)}
    with pytest.raises(CorruptPayload, match="tensors 'a' and 'b' overlap: 'a' ends at 8, 'b' begins at 4"):
        decode(payload_with(header, bytes(12)))


def test_a_gap_between_tensors_is_corrupt() -> None:
    header = {"a": f32_entry([1], 0, 4), "b": f32_entry([1], 8, 12)}
    with pytest.raises(CorruptPayload, match="gap of 4 bytes in the data before tensor 'b'"):
        decode(payload_with(header, bytes(12)))


def test_trailing_bytes_after_the_last_tensor_are_corrupt() -> None:
    with pytest.raises(CorruptPayload, match="tensors cover 4 bytes but the data section holds 8"):
        decode(payload_with({"a": f32_entry([1], 0, 4)}, bytes(8)))


def test_bool_bytes_other_than_zero_and_one_are_corrupt() -> None:
    header = {"m": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}
    with pytest.raises(CorruptPayload, match="tensor 'm': BOOL data holds bytes other than 0 and 1"):
        decode(payload_with(header, b"\x01\x07"))


def test_too_many_tensors_are_refused_while_parsing() -> None:
    weights = {f"t{i}": np.zeros(1, np.float32) for i in range(20)}
    with pytest.raises(CorruptPayload, match="more than 10 tensors"):
        decode(encode(weights), max_tensors=10)
    assert len(decode(encode(weights), max_tensors=20)) == 20


def test_a_dtype_outside_the_allowed_set_is_refused() -> None:
    with pytest.raises(CorruptPayload, match="tensor 'x': dtype I64 is not allowed here"):
        decode(encode({"x": np.zeros(1, np.int64)}), allowed_dtypes={"F32"})


# ------------------------------------------------------------------- validation


def reference() -> dict[str, np.ndarray]:
    return {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def test_a_finite_update_with_the_reference_layout_is_accepted() -> None:
    validate_update({"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}, reference())


def test_an_update_with_nan_or_inf_is_refused_naming_the_tensor() -> None:
    update = reference()
    update["w"] = np.array([[np.nan, 1, np.inf], [-np.inf, 0, 0]], np.float32)
    with pytest.raises(InvalidWeights, match=r"tensor 'w': non-finite values \(1 NaN, 2 infinite\)"):
        validate_update(update, reference())


def test_an_update_with_a_wrong_shape_is_refused_with_both_shapes() -> None:
    update = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.float32)}
    with pytest.raises(InvalidWeights, match=r"tensor 'w': wrong shape \(3, 2\) vs \(2, 3\) expected"):
        validate_update(update, reference())


def test_an_update_with_another_dtype_is_refused() -> None:
    update: dict[str, np.ndarray] = {"w": np.zeros((2, 3), np.float64), "b": np.zeros(3, np.float32)}
    with pytest.raises(InvalidWeights, match="tensor 'w': wrong dtype float64 vs float32 expected"):
        validate_update(update, reference())


def test_an_int_tensor_is_refused_where_floats_are_required_but_allowed_otherwise() -> None:
    ref = {"steps": np.zeros((), np.int64)}
    with pytest.raises(InvalidWeights, match="tensor 'steps': dtype int64 is not a float type"):
        validate_update({"steps": np.ones((), np.int64)}, ref)
    validate_update({"steps": np.ones((), np.int64)}, ref, require_float=False)


def test_missing_and_extra_tensors_are_listed_together() -> None:
    update = {"w": np.zeros((2, 3), np.float32), "extra": np.zeros(1, np.float32)}
    with pytest.raises(InvalidWeights, match="missing tensors 'b'; unexpected tensors 'extra'") as caught:
        validate_update(update, reference())
    assert caught.value.details["problems"] == ["missing tensors 'b'", "unexpected tensors 'extra'"]
