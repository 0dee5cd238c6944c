"""Loading a component's settings dataclass from a file and ``NSFL_*`` variables.

Each component declares one frozen dataclass (``settings.py`` in its package)
and calls :func:`load_settings` once at start.  Sources, lowest precedence
first: the dataclass defaults, a YAML/JSON file, then environment variables
named ``<prefix><FIELD_NAME_UPPER>`` (for example ``NSFL_SELECTOR_PORT``).

The loader is strict on purpose: an unknown key in the file or an unknown
variable under the component's prefix is an :class:`~libs.errors.UnknownSetting`
naming the key (a typo must not silently fall back to a default), and a value
that does not convert to the field's type is an
:class:`~libs.errors.InvalidSetting` naming the key and the expected type.
A dataclass may define ``validate(self) -> None`` for cross-field checks.

Nested dataclasses are supported in files (a mapping) but not in variables;
list/tuple fields take comma-separated variables.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from libs.errors import InvalidSetting, UnknownSetting

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping; a clear error if it is not one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidSetting(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InvalidSetting(f"config file {path} is not valid YAML/JSON: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidSetting(f"config file {path} must hold a mapping of keys to values")
    return data


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(sorted(known))})"


def _convert(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from YAML or a variable string) to the field type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value == "" and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors: list[str] = []
        for candidate in inner:
            try:
                return _convert(key, value, candidate)
            except InvalidSetting as exc:
                errors.append(exc.message)
        raise InvalidSetting(errors[0] if errors else f"setting {key!r}: invalid value")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise InvalidSetting(f"setting {key!r} must be a mapping")
        return _build(tp, value, f"{key}.")
    if origin in (list, tuple):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise InvalidSetting(f"setting {key!r} must be a list")
        item_type = args[0] if args else str
        converted = [_convert(key, item.strip() if isinstance(item, str) else item, item_type)
                     for item in items if not (isinstance(item, str) and item.strip() == "")]
        return tuple(converted) if origin is tuple else converted
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise InvalidSetting(f"setting {key!r} must be a mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise InvalidSetting(f"setting {key!r} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise InvalidSetting(f"setting {key!r} must be a number, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise InvalidSetting(
                f"setting {key!r} must be {'an integer' if tp is int else 'a number'}, got {value!r}"
            ) from None
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise InvalidSetting(f"setting {key!r} must be a path, got {value!r}")
        return Path(value).expanduser()
    if tp is str:
        if isinstance(value, (dict, list)):
            raise InvalidSetting(f"setting {key!r} must be a string")
        return str(value)
    return value


def _build(cls: type[T], values: Mapping[str, Any], where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise UnknownSetting(
                f"unknown setting {where + key!r}{_suggest(name, list(fields))}",
                details={"key": where + key},
            )
        kwargs[name] = _convert(where + key, value, hints[name])
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise InvalidSetting(f"settings {where or ''}incomplete: {exc}") from exc
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def load_settings(
    cls: type[T],
    *,
    prefix: str,
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults, then ``file``, then ``env`` variables, then ``overrides``."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if file is not None:
        values.update(read_config_file(file))
    field_names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for var, raw in env.items():
        if not var.startswith(prefix):
            continue
        name = var[len(prefix):].lower()
        if name not in field_names:
            raise UnknownSetting(
                f"unknown environment variable {var}{_suggest(name, field_names)}",
                details={"key": var},
            )
        values[name] = raw
    values.update(overrides or {})
    return _build(cls, values)
