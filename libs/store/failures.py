"""The errors a store raises about documents, worded the same by every backend.

Both backends build their ``NotFound``, ``AlreadyExists`` and
``VersionConflict`` here so that messages and ``details`` do not depend on the
backend: callers (and the REST layer) may rely on
``details["current_version"]`` after a conflict whichever store is configured.
Keys and collection names are not secret, so they appear in messages.
"""

from __future__ import annotations

from libs.errors import AlreadyExists, NotFound, VersionConflict


def not_found(collection: str, key: str) -> NotFound:
    return NotFound(f"no {collection} document {key!r}", details={"collection": collection, "key": key})


def already_exists(collection: str, key: str) -> AlreadyExists:
    return AlreadyExists(
        f"{collection} document {key!r} already exists", details={"collection": collection, "key": key}
    )


def version_conflict(collection: str, key: str, expected: int, current: int) -> VersionConflict:
    return VersionConflict(
        f"{collection} document {key!r} is at version {current}, not {expected}; re-read and retry",
        details={
            "collection": collection,
            "key": key,
            "expected_version": expected,
            "current_version": current,
        },
    )
