"""JSON lines: the framing of both local channels between the task manager and its children.

Each message is one JSON object on one line.  The message classes (:mod:`.launch_channel`,
:mod:`.job_channel`) write their fields with :func:`encode` and read them back through
:class:`Fields`, which checks each field's presence and type as it is read: a line that is not a
JSON object, lacks a field or holds one of the wrong type is a :class:`MalformedMessage` that says
which channel, which message and which field, never a ``KeyError`` deep in a handler.

Why not a schema library: these lines are read on the round's critical path (a task's ``run`` and
``finished``); one ``json.loads`` and a few ``isinstance`` checks is all they need.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from libs.errors import NsflError

MAX_QUOTED = 200  # how much of a bad line an error quotes


class MalformedMessage(NsflError):
    """A line on a local channel that is not one of that channel's messages (an internal error)."""


def encode(fields: Mapping[str, object]) -> bytes:
    """One message as its line, newline included."""
    return (json.dumps(fields) + "\n").encode()


def decode(line: bytes | str, channel: str) -> Fields:
    """The JSON object on ``line``; :class:`MalformedMessage` if it is none."""
    try:
        value = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise MalformedMessage(f"{channel}: a line that is not JSON ({exc}): {_quote(line)}") from None
    if not isinstance(value, dict):
        raise MalformedMessage(f"{channel}: a line that is not a JSON object: {_quote(line)}")
    return Fields(value, channel)


def _quote(line: bytes | str) -> str:
    return repr(line[:MAX_QUOTED])


class Fields:
    """One decoded object, read field by field with its type checked (see the module docstring)."""

    __slots__ = ("values", "channel", "message")

    def __init__(self, values: dict[str, object], channel: str, message: str = "message") -> None:
        self.values = values
        self.channel = channel
        self.message = message

    def named(self, message: str) -> Fields:
        """The same fields, with errors naming ``message`` (once the kind of message is known)."""
        return Fields(self.values, self.channel, message)

    def has(self, key: str) -> bool:
        return key in self.values

    def malformed(self, problem: str) -> MalformedMessage:
        return MalformedMessage(
            f"{self.channel}: {self.message} {problem}: {_quote(json.dumps(self.values))}"
        )

    def _get(self, key: str) -> object:
        try:
            return self.values[key]
        except KeyError:
            raise self.malformed(f"has no {key!r}") from None

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self.malformed(f"has a {key!r} that is not a string")
        return value

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.malformed(f"has a {key!r} that is not an integer")
        return value

    def optional_integer(self, key: str) -> int | None:
        return None if self.values.get(key) is None else self.integer(key)

    def number(self, key: str) -> float:
        value = self._get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.malformed(f"has a {key!r} that is not a number")
        return float(value)

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self.malformed(f"has a {key!r} that is not true or false")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.malformed(f"has a {key!r} that is not a list of strings")
        return tuple(value)

    def optional_integers(self, key: str) -> tuple[int, ...] | None:
        value = self.values.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in value
        ):
            raise self.malformed(f"has a {key!r} that is not a list of integers")
        return tuple(value)

    def optional_object(self, key: str) -> Fields | None:
        value = self.values.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.malformed(f"has a {key!r} that is not an object")
        return Fields(value, self.channel, f"{self.message}'s {key}")
