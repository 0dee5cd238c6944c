"""The embedded :class:`~libs.store.protocol.DocumentStore`: one SQLite file.

This is the default backend for a single machine: no server to run, and
several processes (scheduler, API server, coordinators) can share one file.
That sharing is why the connection uses WAL mode (readers never block the
writer) and a busy timeout (a writer waits for another process's write instead
of failing at once), and why compare-and-set is a single
``UPDATE ... WHERE key = ? AND version = ?`` whose row count says who won:
SQLite serialises writers across processes, so exactly one of several racing
writers with the same expected version changes the row.

Each collection is a table ``doc_<collection>`` with ``key TEXT PRIMARY KEY``,
``version INTEGER`` and ``data TEXT`` (JSON), created on first use.  Filters
and sort orders are built in :mod:`libs.store.sqlite_queries`.

Within one process the aiosqlite connection runs statements on one thread in
order, but an ``await`` between ``BEGIN`` and ``COMMIT`` would let another task
slip its statements into the open transaction; an :class:`asyncio.Lock` around
every operation prevents that.  The connection is in autocommit mode
(``isolation_level=None``) and read-modify-write operations open their own
``BEGIN IMMEDIATE`` transaction, which takes the write lock up front so two
processes cannot both read the old value.

Locations: an absolute file path, or ``":memory:"`` for a private in-memory
database (gone on close, invisible to other store instances).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from libs.errors import Unavailable
from libs.json_values import JsonObject
from libs.store.failures import already_exists, not_found, version_conflict
from libs.store.protocol import Document, Where
from libs.store.query import parse_order_by, parse_required_where, parse_where
from libs.store.sqlite_queries import create_table, order_clause, table_name, where_clause
from libs.store.validation import (
    check_collection,
    check_key,
    check_paging,
    check_version,
    json_object,
    patch_changes,
)

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
DEFAULT_BUSY_TIMEOUT_MS = 5000


def _encode(data: JsonObject) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _decode(key: str, version: int, text: str) -> Document:
    return Document(key=key, version=version, data=json.loads(text))


class SqliteDocumentStore:
    """A :class:`~libs.store.protocol.DocumentStore` on one SQLite database; build it with :meth:`open`."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()
        self._tables: set[str] = set()
        self._closed = False

    @classmethod
    async def open(cls, path: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> SqliteDocumentStore:
        """Open (creating if needed) the database at ``path`` (absolute, or ``":memory:"``)."""
        try:
            connection = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        except sqlite3.Error as err:
            raise Unavailable(f"cannot open the SQLite database at {path}: {err}") from None
        try:
            if path != MEMORY:
                async with connection.execute("PRAGMA journal_mode=WAL") as cursor:
                    row = await cursor.fetchone()
                if row is None or str(row[0]).lower() != "wal":
                    logger.warning("SQLite at %s did not switch to WAL mode (got %s)", path, row)
        except sqlite3.Error as err:
            await connection.close()
            raise Unavailable(f"cannot open the SQLite database at {path}: {err}") from None
        return cls(connection)

    # -- single documents --------------------------------------------------

    async def insert(self, collection: str, key: str, data: Mapping[str, Any]) -> Document:
        check_key(key)
        copied = json_object(data)
        async with self._session(collection) as table:
            try:
                await self._execute(
                    f"INSERT INTO {table} (key, version, data) VALUES (?, 1, ?)", key, _encode(copied)
                )
            except sqlite3.IntegrityError:
                raise already_exists(collection, key) from None
        return Document(key, 1, copied)

    async def get(self, collection: str, key: str) -> Document:
        document = await self.try_get(collection, key)
        if document is None:
            raise not_found(collection, key)
        return document

    async def try_get(self, collection: str, key: str) -> Document | None:
        check_key(key)
        async with self._session(collection) as table:
            row = await self._fetch_one(f"SELECT version, data FROM {table} WHERE key = ?", key)
        return None if row is None else _decode(key, row[0], row[1])

    async def replace(
        self, collection: str, key: str, data: Mapping[str, Any], *, expected_version: int
    ) -> Document:
        check_key(key)
        check_version(expected_version)
        copied = json_object(data)
        async with self._session(collection) as table:
            changed = await self._execute(
                f"UPDATE {table} SET version = version + 1, data = ? WHERE key = ? AND version = ?",
                _encode(copied),
                key,
                expected_version,
            )
            if changed != 1:
                await self._raise_mismatch(table, collection, key, expected_version)
        return Document(key, expected_version + 1, copied)

    async def patch(
        self,
        collection: str,
        key: str,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> Document:
        check_key(key)
        if expected_version is not None:
            check_version(expected_version)
        copied = patch_changes(changes)
        async with self._session(collection) as table, self._transaction():
            row = await self._fetch_one(f"SELECT version, data FROM {table} WHERE key = ?", key)
            if row is None:
                raise not_found(collection, key)
            version: int = row[0]
            if expected_version is not None and version != expected_version:
                raise version_conflict(collection, key, expected_version, version)
            data = json.loads(row[1])
            data.update(copied)
            await self._execute(
                f"UPDATE {table} SET version = ?, data = ? WHERE key = ?", version + 1, _encode(data), key
            )
        return Document(key, version + 1, data)

    async def upsert(self, collection: str, key: str, data: Mapping[str, Any]) -> Document:
        check_key(key)
        copied = json_object(data)
        async with self._session(collection) as table:
            row = await self._fetch_one(
                f"INSERT INTO {table} (key, version, data) VALUES (?, 1, ?) "
                "ON CONFLICT (key) DO UPDATE SET version = version + 1, data = excluded.data "
                "RETURNING version",
                key,
                _encode(copied),
            )
        assert row is not None  # RETURNING yields the written row
        return Document(key, row[0], copied)

    async def delete(self, collection: str, key: str, *, expected_version: int | None = None) -> bool:
        check_key(key)
        async with self._session(collection) as table:
            if expected_version is None:
                return await self._execute(f"DELETE FROM {table} WHERE key = ?", key) == 1
            check_version(expected_version)
            if await self._execute(
                f"DELETE FROM {table} WHERE key = ? AND version = ?", key, expected_version
            ):
                return True
            row = await self._fetch_one(f"SELECT version FROM {table} WHERE key = ?", key)
            if row is None:
                return False
            raise version_conflict(collection, key, expected_version, row[0])

    # -- queries -----------------------------------------------------------

    async def find(
        self,
        collection: str,
        where: Where | None = None,
        *,
        order_by: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Document]:
        where_sql, params = where_clause(parse_where(where))
        order_sql, order_params = order_clause(parse_order_by(order_by))
        limit, offset = check_paging(limit, offset)
        async with self._session(collection) as table:
            rows = await self._fetch_all(
                f"SELECT key, version, data FROM {table} {where_sql} {order_sql} LIMIT ? OFFSET ?",
                *params,
                *order_params,
                -1 if limit is None else limit,
                offset,
            )
        return [_decode(row[0], row[1], row[2]) for row in rows]

    async def count(self, collection: str, where: Where | None = None) -> int:
        where_sql, params = where_clause(parse_where(where))
        async with self._session(collection) as table:
            row = await self._fetch_one(f"SELECT COUNT(*) FROM {table} {where_sql}", *params)
        return 0 if row is None else int(row[0])

    async def delete_many(self, collection: str, where: Where) -> int:
        where_sql, params = where_clause(parse_required_where(where))
        async with self._session(collection) as table:
            return await self._execute(f"DELETE FROM {table} {where_sql}", *params)

    # -- lifecycle ---------------------------------------------------------

    async def ping(self) -> None:
        async with self._locked():
            await self._fetch_one("SELECT 1")

    async def close(self) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            await self._connection.close()

    # -- helpers -----------------------------------------------------------

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        async with self._lock:
            if self._closed:
                raise Unavailable("the document store is closed")
            try:
                yield
            except sqlite3.DatabaseError as err:  # OperationalError and file-level failures
                logger.warning("SQLite operation failed: %s", err)
                if "locked" in str(err) or "busy" in str(err):
                    raise Unavailable("the SQLite database is busy; retry later") from None
                raise Unavailable("the SQLite database cannot be used; see the service logs") from None

    @asynccontextmanager
    async def _session(self, collection: str) -> AsyncIterator[str]:
        """Lock the connection and make sure the collection's table exists; yields its name."""
        check_collection(collection)
        async with self._locked():
            if collection not in self._tables:
                await self._execute(create_table(collection))
                self._tables.add(collection)
            yield table_name(collection)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        await self._execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            await self._execute("ROLLBACK")
            raise
        await self._execute("COMMIT")

    async def _execute(self, sql: str, *params: Any) -> int:
        async with self._connection.execute(sql, params) as cursor:
            return cursor.rowcount

    async def _fetch_one(self, sql: str, *params: Any) -> Any:
        async with self._connection.execute(sql, params) as cursor:
            rows = list(await cursor.fetchall())
        return rows[0] if rows else None

    async def _fetch_all(self, sql: str, *params: Any) -> list[Any]:
        async with self._connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _raise_mismatch(self, table: str, collection: str, key: str, expected_version: int) -> None:
        row = await self._fetch_one(f"SELECT version FROM {table} WHERE key = ?", key)
        if row is None:
            raise not_found(collection, key)
        raise version_conflict(collection, key, expected_version, row[0])
