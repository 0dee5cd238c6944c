"""Dict and binary encodings of the secure-aggregation messages (never pickle).

Every message is a frozen dataclass whose fields are ``int`` (unsigned, 64
bits), ``float``, ``str``, ``bytes`` or tuples of ``int``, ``str`` or nested
messages.  :class:`WireMessage` derives both encodings from the field
annotations, so a message type is declared once:

* ``to_dict`` / ``from_dict``: plain values (bytes stay bytes, tuples become
  lists), one-to-one with protobuf fields for the gRPC carrier;
* ``to_bytes`` / ``from_bytes``: ``b"NSA1"``, a 2-byte type tag, then the
  fields in declaration order (big-endian lengths and integers).

Decoding is strict and bounded: unknown or missing fields, wrong types,
lengths that run past the buffer and trailing bytes are all
:class:`~libs.errors.ValidationFailed`, raised before anything large is
allocated.  Field-level checks (key sizes, index ranges) live in each
message's ``__post_init__`` and so run on both decoders.
"""

from __future__ import annotations

import dataclasses
import struct
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from libs.errors import ValidationFailed

MAGIC = b"NSA1"
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_F64 = struct.Struct(">d")

M = TypeVar("M", bound="WireMessage")


def _fields(cls: type) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    return [(field.name, hints[field.name]) for field in dataclasses.fields(cls)]


def _item_type(annotation: Any) -> Any:
    return typing.get_args(annotation)[0]


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple


def _is_message(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, WireMessage)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._offset = 0

    @property
    def remaining(self) -> int:
        return len(self._view) - self._offset

    def take(self, size: int) -> bytes:
        if size > self.remaining:
            raise ValidationFailed("message is truncated")
        chunk = bytes(self._view[self._offset : self._offset + size])
        self._offset += size
        return chunk


def _write(annotation: Any, value: Any, out: list[bytes]) -> None:
    if _is_tuple(annotation):
        out.append(_U32.pack(len(value)))
        for item in value:
            _write(_item_type(annotation), item, out)
    elif _is_message(annotation):
        value.write_fields(out)
    elif annotation is int:
        out.append(_U64.pack(value))
    elif annotation is float:
        out.append(_F64.pack(value))
    elif annotation is str:
        encoded = value.encode("utf-8")
        out.append(_U32.pack(len(encoded)))
        out.append(encoded)
    else:
        out.append(_U64.pack(len(value)))
        out.append(value)


def _read(annotation: Any, reader: _Reader) -> Any:
    if _is_tuple(annotation):
        (count,) = _U32.unpack(reader.take(4))
        if count > reader.remaining:
            raise ValidationFailed("message is truncated")
        return tuple(_read(_item_type(annotation), reader) for _ in range(count))
    if _is_message(annotation):
        return annotation.read_fields(reader)
    if annotation is int:
        return _U64.unpack(reader.take(8))[0]
    if annotation is float:
        return _F64.unpack(reader.take(8))[0]
    if annotation is str:
        (size,) = _U32.unpack(reader.take(4))
        try:
            return reader.take(size).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationFailed("a text field is not UTF-8") from exc
    (size,) = _U64.unpack(reader.take(8))
    return reader.take(size)


def _to_plain(annotation: Any, value: Any) -> Any:
    if _is_tuple(annotation):
        return [_to_plain(_item_type(annotation), item) for item in value]
    if _is_message(annotation):
        return value.to_dict()
    return value


def _from_plain(annotation: Any, value: Any, name: str) -> Any:
    if _is_tuple(annotation):
        if not isinstance(value, list | tuple):
            raise ValidationFailed(f"field {name!r} must be a list")
        return tuple(_from_plain(_item_type(annotation), item, name) for item in value)
    if _is_message(annotation):
        if not isinstance(value, Mapping):
            raise ValidationFailed(f"field {name!r} must be a mapping")
        return annotation.from_dict(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bytes and isinstance(value, bytearray | memoryview):
        return bytes(value)
    if not isinstance(value, annotation) or isinstance(value, bool):
        raise ValidationFailed(f"field {name!r} must be {annotation.__name__}")
    return value


def _check_ranges(annotation: Any, value: Any, name: str) -> None:
    if _is_tuple(annotation):
        for item in value:
            _check_ranges(_item_type(annotation), item, name)
    elif annotation is int and not 0 <= value < 1 << 64:
        raise ValidationFailed(f"field {name!r} must be an unsigned 64-bit integer")


class WireMessage:
    """Base of every message: derived ``to_dict``/``from_dict``/``to_bytes``/``from_bytes``."""

    wire_tag: ClassVar[int] = 0

    def _check_wire_ranges(self) -> None:
        for name, annotation in _fields(type(self)):
            _check_ranges(annotation, getattr(self, name), name)

    def write_fields(self, out: list[bytes]) -> None:
        for name, annotation in _fields(type(self)):
            _write(annotation, getattr(self, name), out)

    @classmethod
    def read_fields(cls: type[M], reader: _Reader) -> M:
        values = {name: _read(annotation, reader) for name, annotation in _fields(cls)}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {name: _to_plain(annotation, getattr(self, name)) for name, annotation in _fields(type(self))}

    @classmethod
    def from_dict(cls: type[M], data: Mapping[str, Any]) -> M:
        fields = _fields(cls)
        names = {name for name, _ in fields}
        if set(data) != names:
            raise ValidationFailed(
                f"{cls.__name__} fields differ: unknown {sorted(set(data) - names)}, "
                f"missing {sorted(names - set(data))}"
            )
        message = cls(**{name: _from_plain(annotation, data[name], name) for name, annotation in fields})
        message._check_wire_ranges()
        return message

    def to_bytes(self) -> bytes:
        self._check_wire_ranges()
        out = [MAGIC, _U16.pack(self.wire_tag)]
        self.write_fields(out)
        return b"".join(out)

    @classmethod
    def from_bytes(cls: type[M], data: bytes) -> M:
        reader = _Reader(data)
        if reader.take(len(MAGIC)) != MAGIC:
            raise ValidationFailed("not a secure-aggregation message")
        (tag,) = _U16.unpack(reader.take(2))
        if tag != cls.wire_tag:
            raise ValidationFailed(f"expected a {cls.__name__} message (tag {cls.wire_tag}), got tag {tag}")
        message = cls.read_fields(reader)
        if reader.remaining:
            raise ValidationFailed("trailing bytes after the message")
        return message
