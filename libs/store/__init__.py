"""The document store: versioned JSON documents in named collections (DESIGN §7).

Components open one store from a URL with :func:`open_document_store` and
program against the :class:`~libs.store.protocol.DocumentStore` protocol, so
the same code runs on a laptop (SQLite) and in a cluster (MongoDB).

Store URLs:

- ``sqlite:///<absolute path>``, e.g. ``sqlite:///var/lib/nsfl/state.db``: a
  file shared by every process that opens it (WAL mode, busy timeout); the
  file is created if missing, its directory must exist.  Percent-escapes in
  the path are decoded.  Option: ``?busy_timeout_ms=<0..600000>`` (default
  5000), how long a writer waits for another process's write.  SQLAlchemy's
  four-slash spelling ``sqlite:////abs/path.db`` names the same file.
- ``sqlite:///:memory:`` (or ``sqlite://:memory:``): a private in-memory
  database, for tests and one-shot tools; each open gives a new, empty
  database that no other store instance sees, gone on close.
- ``mongodb://[user:password@]host[:port][,host...]/<database>[?options]``
  (also ``mongodb+srv://``): the database name is required; options are
  passed to the driver.  Unless the URL sets ``serverSelectionTimeoutMS``,
  operations give up after 10 s with ``Unavailable``.  Connecting is lazy:
  opening succeeds while the server is down, and :meth:`ping` tells.

Relative SQLite paths are refused rather than resolved against the current
directory, because two processes started from different directories would
silently use different databases.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from libs.errors import ValidationFailed
from libs.store.protocol import Document, DocumentStore, OrderBy, Where
from libs.store.sqlite_store import DEFAULT_BUSY_TIMEOUT_MS, MEMORY, SqliteDocumentStore

__all__ = [
    "Document",
    "DocumentStore",
    "OrderBy",
    "SqliteDocumentStore",
    "Where",
    "open_document_store",
    "sqlite_location",
]

SUPPORTED_URLS = (
    "sqlite:///<absolute path>, sqlite:///:memory:, mongodb://host[:port]/<database>, mongodb+srv://"
)
MAX_BUSY_TIMEOUT_MS = 600_000


async def open_document_store(url: str) -> DocumentStore:
    """Open the store that ``url`` names; ``ValidationFailed`` for a URL that is not supported.

    Error messages name the scheme at most, never the whole URL, which may hold a password.
    """
    if not isinstance(url, str):
        raise ValidationFailed(f"the document store URL must be a string; supported: {SUPPORTED_URLS}")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        path, busy_timeout_ms = sqlite_location(url)
        return await SqliteDocumentStore.open(path, busy_timeout_ms=busy_timeout_ms)
    if scheme in ("mongodb", "mongodb+srv"):
        # Imported here so that processes on SQLite never load the MongoDB driver.
        from libs.store.mongo_store import MongoDocumentStore

        return MongoDocumentStore.from_url(url)
    shown = f"scheme {scheme[:20]!r}" if scheme else "a URL without a scheme"
    raise ValidationFailed(
        f"unsupported document store URL ({shown}); supported: {SUPPORTED_URLS}",
        details={"supported": SUPPORTED_URLS},
    )


def sqlite_location(url: str) -> tuple[str, int]:
    """The database path (or ``":memory:"``) and busy timeout in ms of a ``sqlite://`` URL."""
    parts = urlsplit(url)
    if parts.fragment:
        raise ValidationFailed("sqlite URLs take no #fragment")
    busy_timeout_ms = _busy_timeout(parts.query)
    if parts.netloc == MEMORY and parts.path == "" or parts.netloc == "" and parts.path == "/" + MEMORY:
        return MEMORY, busy_timeout_ms
    if parts.netloc:
        raise ValidationFailed(
            "sqlite URLs take an absolute path after three slashes, e.g. sqlite:///var/lib/nsfl/state.db",
        )
    path = unquote(parts.path)
    if path.startswith("//"):
        # SQLAlchemy's spelling of an absolute path (sqlite:////abs/path.db) means the same file.
        path = "/" + path.lstrip("/")
    if not path.startswith("/") or path.endswith("/") or "\x00" in path:
        raise ValidationFailed(
            "sqlite URLs must name a file by its absolute path, e.g. sqlite:///var/lib/nsfl/state.db"
        )
    if not Path(path).parent.is_dir():
        raise ValidationFailed(
            f"the directory of the SQLite database {path} does not exist", details={"path": path}
        )
    return path, busy_timeout_ms


def _busy_timeout(query: str) -> int:
    busy_timeout_ms = DEFAULT_BUSY_TIMEOUT_MS
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != "busy_timeout_ms":
            raise ValidationFailed(
                "unknown sqlite URL option; supported: busy_timeout_ms", details={"option": name[:40]}
            )
        if not value.isdigit() or int(value) > MAX_BUSY_TIMEOUT_MS:
            raise ValidationFailed(f"busy_timeout_ms must be an integer from 0 to {MAX_BUSY_TIMEOUT_MS}")
        busy_timeout_ms = int(value)
    return busy_timeout_ms
