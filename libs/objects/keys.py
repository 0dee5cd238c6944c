"""Object keys: the one definition of a valid key, shared by every backend.

A key is a relative, ``/``-separated path such as ``ns/jobs/j1/rounds/3/delta``.
Both backends apply exactly the same rules, so a key that works on local files
also works on S3 and the other way round; otherwise a job that ran on a
laptop could fail on the cluster for a reason unrelated to the job.

The rules are stricter than S3's own (which accepts nearly any byte string)
because the file backend maps keys to paths, and a path is where traversal
attacks live (DESIGN §9, "paths from users are resolved inside their allowed
roots"):

* non-empty, at most 1024 bytes of UTF-8 (S3's limit), each segment at most
  255 bytes (the usual file-name limit);
* no leading ``/`` (absolute), no empty, ``.`` or ``..`` segment, no backslash
  (a separator on Windows), no NUL or other control characters (they break
  logs and terminals);
* no segment starting with ``.nsfl-``: that prefix is reserved for the file
  backend's temporary files and checksum sidecars, so a user key can never
  collide with them or be hidden from ``list``.

A *prefix* (for ``list`` and ``delete_prefix``) is a key prefix, not a
directory: ``ns/jobs/j1/`` lists that job's objects, and ``ns/jobs/j`` lists
every job whose name starts with ``j``.  Its complete segments follow the key
rules; its last, partial segment only has to avoid the forbidden characters.
"""

from __future__ import annotations

import unicodedata

from libs.errors import InvalidKey

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
RESERVED_PREFIX = ".nsfl-"


def _check_characters(text: str, what: str) -> None:
    if text.startswith("/"):
        raise InvalidKey(f"{what} {text!r} must be relative: it must not start with '/'")
    if "\\" in text:
        raise InvalidKey(f"{what} {text!r} must not contain a backslash; use '/' to separate segments")
    for char in text:
        if unicodedata.category(char) == "Cc":
            raise InvalidKey(f"{what} {text!r} must not contain NUL or other control characters")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey(f"{what} {text!r} is not valid Unicode text") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} is {len(encoded)} bytes long; the limit is {MAX_KEY_BYTES} bytes of UTF-8")


def _check_segment(segment: str, text: str, what: str) -> None:
    if segment == "":
        raise InvalidKey(f"{what} {text!r} has an empty segment ('//' or a trailing '/')")
    if segment in (".", ".."):
        raise InvalidKey(f"{what} {text!r} must not contain a {segment!r} segment")
    if segment.startswith(RESERVED_PREFIX):
        raise InvalidKey(f"{what} {text!r} uses the reserved segment prefix {RESERVED_PREFIX!r}")
    if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise InvalidKey(f"{what} {text!r} has a segment longer than {MAX_SEGMENT_BYTES} bytes")


def key_segments(key: str) -> tuple[str, ...]:
    """Validate ``key`` and return its segments; :class:`InvalidKey` names the problem."""
    if not isinstance(key, str):
        raise InvalidKey(f"a key must be a string, not {type(key).__name__}")
    if key == "":
        raise InvalidKey("the key must not be empty")
    _check_characters(key, "key")
    segments = tuple(key.split("/"))
    for segment in segments:
        _check_segment(segment, key, "key")
    return segments


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is valid, else raise :class:`InvalidKey`."""
    key_segments(key)
    return key


def is_valid_key(key: str) -> bool:
    """Whether ``key`` is valid (used to skip foreign objects when listing)."""
    try:
        key_segments(key)
    except InvalidKey:
        return False
    return True


def prefix_segments(prefix: str) -> tuple[tuple[str, ...], str]:
    """Validate a key prefix; return its complete segments and its partial last segment.

    ``""`` is the empty prefix (every key).  ``"a/b/"`` gives ``(("a", "b"), "")``
    and ``"a/b/c"`` gives ``(("a", "b"), "c")``.
    """
    if not isinstance(prefix, str):
        raise InvalidKey(f"a prefix must be a string, not {type(prefix).__name__}")
    if prefix == "":
        return (), ""
    _check_characters(prefix, "prefix")
    *complete, partial = prefix.split("/")
    for segment in complete:
        _check_segment(segment, prefix, "prefix")
    if partial.startswith(RESERVED_PREFIX):
        raise InvalidKey(f"prefix {prefix!r} uses the reserved segment prefix {RESERVED_PREFIX!r}")
    return tuple(complete), partial


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if it is a valid key prefix, else raise :class:`InvalidKey`."""
    prefix_segments(prefix)
    return prefix
