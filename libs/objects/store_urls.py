"""Reading an object store location (a URL plus options) into a backend's settings.

Components take the store as one configuration string, so switching from
local files to MinIO is a change of configuration, not of code:

* ``file:///var/lib/nsfl/objects`` (options: ``create``, ``fsync``, ``chunk_size``);
* ``s3://bucket[/base/prefix]?endpoint=http://127.0.0.1:9000&create_bucket=true``
  (any :class:`~libs.objects.s3_store.S3Settings` field as a query parameter
  or an option).

Credentials are deliberately *not* accepted in the URL, neither as
``user:password@`` nor as query parameters: a store URL ends up in settings
dumps, logs and error messages.  They come from the options
(``access_key``/``secret_key``/``session_token``) or from the environment
(``NSFL_S3_ACCESS_KEY``, ``NSFL_S3_SECRET_KEY``, ``NSFL_S3_SESSION_TOKEN``).
Error messages here never repeat the URL or a value, only names.

Like the settings loader, this is strict: an unknown parameter is an error
naming it, not something silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from libs.errors import ValidationFailed
from libs.objects.s3_store import S3Settings

SUPPORTED = "file:///absolute/path or s3://bucket?endpoint=http://host:port"
SECRET_OPTIONS = ("access_key", "secret_key", "session_token")
SECRET_ENVIRONMENT = {
    "access_key": "NSFL_S3_ACCESS_KEY",
    "secret_key": "NSFL_S3_SECRET_KEY",
    "session_token": "NSFL_S3_SESSION_TOKEN",
}
FILE_OPTIONS: dict[str, type] = {"create": bool, "fsync": bool, "chunk_size": int}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True)
class FileLocation:
    root: str
    options: dict[str, Any]


def _convert(name: str, value: Any, kind: Any) -> Any:
    """Convert a query string (or check an option) to the field's type."""
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValidationFailed(f"object store parameter {name!r} must be true or false")
        try:
            return kind(text)
        except ValueError:
            raise ValidationFailed(f"object store parameter {name!r} must be a {kind.__name__}") from None
    if kind is bool and not isinstance(value, bool):
        raise ValidationFailed(f"object store option {name!r} must be a bool")
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValidationFailed(f"object store option {name!r} must be a {kind.__name__}")
    return value


def _query(query: str) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    names = [name for name, _ in pairs]
    for name in names:
        if name.lower() in SECRET_OPTIONS or name.lower() in ("password", "secret", "token"):
            raise ValidationFailed(
                "credentials must not be part of an object store URL; pass them as options or set "
                "NSFL_S3_ACCESS_KEY and NSFL_S3_SECRET_KEY"
            )
        if names.count(name) > 1:
            raise ValidationFailed(f"object store parameter {name!r} is given more than once")
    return dict(pairs)


def _merge(query: Mapping[str, str], options: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for source in (query, options):
        for name, value in source.items():
            if name not in fields:
                raise ValidationFailed(
                    f"unknown object store parameter {name!r}; known: {', '.join(sorted(fields))}"
                )
            merged[name] = _convert(name, value, fields[name])
    return merged


def parse_file_url(url: str, options: Mapping[str, Any]) -> FileLocation:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValidationFailed("a file object store URL names a local directory: file:///absolute/path")
    root = unquote(parts.path)
    if not root.startswith("/"):
        raise ValidationFailed("a file object store URL needs an absolute path: file:///absolute/path")
    return FileLocation(root=root, options=_merge(_query(parts.query), options, FILE_OPTIONS))


def _endpoint(value: str) -> tuple[str, bool | None]:
    """``http://host:port`` -> (``host:port``, False); a bare ``host:port`` leaves ``secure`` open."""
    if "://" not in value:
        return value, None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        raise ValidationFailed("the S3 endpoint must be http://host[:port] or https://host[:port]")
    if parts.path not in ("", "/") or parts.query:
        raise ValidationFailed("the S3 endpoint must not have a path or query")
    return parts.netloc, parts.scheme == "https"


def parse_s3_url(url: str, options: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> S3Settings:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ValidationFailed(
            "credentials must not be part of an object store URL; pass them as options or set "
            "NSFL_S3_ACCESS_KEY and NSFL_S3_SECRET_KEY"
        )
    fields = {field.name: field.type for field in dataclasses.fields(S3Settings)}
    kinds = {name: _kind(text) for name, text in fields.items() if name not in ("bucket", "base_prefix")}
    values = _merge(_query(parts.query), options, kinds)
    base_prefix = unquote(parts.path).strip("/")
    if base_prefix:
        values["base_prefix"] = base_prefix  # checked as a key by S3Settings.validate
    if "endpoint" in values:
        values["endpoint"], secure = _endpoint(values["endpoint"])
        if secure is not None:
            values.setdefault("secure", secure)
    for name in SECRET_OPTIONS:
        if values.get(name) is None and environ.get(SECRET_ENVIRONMENT[name]):
            values[name] = environ[SECRET_ENVIRONMENT[name]]
    return S3Settings(bucket=parts.netloc, **values)


def _kind(annotation: Any) -> type:
    """The type to convert a query string to, from a field annotation (a string here)."""
    text = str(annotation)
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if text.startswith(name):
            return kind
    return str
