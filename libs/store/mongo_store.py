"""The cluster :class:`~libs.store.protocol.DocumentStore`: MongoDB through motor.

Each collection is a MongoDB collection of ``{_id: key, version, data}``.
Keeping ``data`` in one sub-document (rather than flattening it next to
``_id``) means a caller's field can never collide with ``_id`` or ``version``,
a whole-document replace is one ``replace_one``, and a filter on a field is
the same field prefixed with ``data.``.

Compare-and-set is a write whose filter includes the expected version
(``replace_one({_id, version}, ...)``, ``find_one_and_update({_id, version},
...)``): MongoDB applies a single-document write atomically, so among racing
writers with the same expected version exactly one matches.  When nothing
matched, one more read tells ``NotFound`` from ``VersionConflict``.

Queries stay inside a small, common subset of MongoDB (``$set``, ``$inc``,
whole replace, ``find`` with sort/skip/limit, ``count_documents``,
``delete_one``/``delete_many``) so that the MongoDB-protocol server used in
tests (nx-27017) and real MongoDB agree.  Filters are built in
:func:`mongo_filter`; comparisons carry an explicit ``$type`` so that only values
of the same kind match (``{"$gt": 1}`` never matches a string) even on servers
that do not apply MongoDB's type bracketing themselves.

Errors: duplicate keys become ``AlreadyExists``; an unreachable or timed-out
server becomes ``Unavailable`` with a short message naming hosts but never the
URL's user or password.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypedDict
from urllib.parse import unquote

from bson.errors import InvalidDocument
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import ReturnDocument
from pymongo.errors import (
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from libs.errors import NsflError, Unavailable, ValidationFailed
from libs.json_values import JsonObject
from libs.store.failures import already_exists, not_found, version_conflict
from libs.store.protocol import Document, Where
from libs.store.query import Condition, parse_order_by, parse_required_where, parse_where
from libs.store.validation import (
    check_collection,
    check_key,
    check_paging,
    check_version,
    json_object,
    patch_changes,
)

logger = logging.getLogger(__name__)

# pymongo waits 30 s by default; a request that depends on the store should fail sooner than
# typical client timeouts.  A serverSelectionTimeoutMS in the URL wins.
DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 10_000
URL_FORM = "mongodb://[user:password@]host[:port][,host...]/<database>[?options]"
_DATABASE_NAME_FORBIDDEN = frozenset('/\\. "$*<>:|?\x00')
_AUTH_FAILURE_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
_RANGES = {"lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte"}

MongoQuery: TypeAlias = JsonObject
"""A MongoDB filter document: field paths under ``data.`` to values or ``$`` operators."""


class _ClientOptions(TypedDict, total=False):
    """The client options nsfl sets unless the URL does."""

    serverSelectionTimeoutMS: int


def mongo_filter(conditions: tuple[Condition, ...]) -> MongoQuery:
    """The MongoDB filter for parsed conditions (fields under ``data.``)."""
    parts = [_condition(condition) for condition in conditions]
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    return {"$and": parts}


def _condition(condition: Condition) -> MongoQuery:
    field = "data." + condition.field
    value = condition.operand
    if condition.op == "eq":
        return {field: _equals(value)}
    if condition.op == "ne":
        # {$ne: null} alone would match a missing field on some servers; MongoDB means "present and not null".
        return {field: {"$ne": None, "$exists": True} if value is None else {"$ne": value}}
    if condition.op == "in":
        return {field: {"$in": list(value)}}
    if condition.op == "exists":
        return {field: {"$exists": value}}
    return {field: {_RANGES[condition.op]: value, "$type": _type_name(value)}}


def _equals(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return {"$eq": value, "$type": _type_name(value)}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "string" if isinstance(value, str) else "number"


def _document(raw: Mapping[str, Any]) -> Document:
    return Document(key=raw["_id"], version=int(raw["version"]), data=dict(raw["data"]))


class MongoDocumentStore:
    """A :class:`~libs.store.protocol.DocumentStore` on one MongoDB database.

    ``client`` is an ``AsyncIOMotorClient`` and ``database`` one of its
    databases; ``hosts`` names the servers in messages (no credentials).
    :func:`libs.store.open_document_store` builds it from a URL.
    """

    def __init__(self, client: Any, database: Any, *, hosts: str) -> None:
        self._client = client
        self._database = database
        self._hosts = hosts
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MongoDocumentStore:
        """A store on the database named in ``url`` (required); connects lazily, on first use.

        ``ValidationFailed`` if the URL is not valid or names no database; the
        message never repeats the URL's user or password.
        """
        netloc = url.partition("://")[2].partition("/")[0]
        userinfo, _, hosts = netloc.rpartition("@")
        options: _ClientOptions = {}
        if "serverselectiontimeoutms=" not in url.lower():
            options["serverSelectionTimeoutMS"] = DEFAULT_SERVER_SELECTION_TIMEOUT_MS
        client: Any = None
        try:
            # pymongo only warns about unknown or invalid options and then ignores them; a
            # misspelt option in a store URL should stop the service at start instead.
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                client = AsyncIOMotorClient(url, **options)
            database = client.get_default_database()
            _check_database_name(database.name)
        except (PyMongoError, ValueError, TypeError, UserWarning) as err:
            if client is not None:
                client.close()
            reason = _without_secrets(str(err), userinfo)
            raise ValidationFailed(f"the MongoDB URL is not valid ({reason}); expected {URL_FORM}") from None
        return cls(client, database, hosts=hosts or "?")

    # -- single documents --------------------------------------------------

    async def insert(self, collection: str, key: str, data: Mapping[str, Any]) -> Document:
        check_key(key)
        copied = json_object(data)
        async with self._calling(collection) as mongo:
            try:
                await mongo.insert_one({"_id": key, "version": 1, "data": copied})
            except DuplicateKeyError:
                raise already_exists(collection, key) from None
        return Document(key, 1, copied)

    async def get(self, collection: str, key: str) -> Document:
        document = await self.try_get(collection, key)
        if document is None:
            raise not_found(collection, key)
        return document

    async def try_get(self, collection: str, key: str) -> Document | None:
        check_key(key)
        async with self._calling(collection) as mongo:
            raw = await mongo.find_one({"_id": key})
        return None if raw is None else _document(raw)

    async def replace(
        self, collection: str, key: str, data: Mapping[str, Any], *, expected_version: int
    ) -> Document:
        check_key(key)
        check_version(expected_version)
        copied = json_object(data)
        async with self._calling(collection) as mongo:
            result = await mongo.replace_one(
                {"_id": key, "version": expected_version}, {"version": expected_version + 1, "data": copied}
            )
            if result.matched_count != 1:
                await self._raise_mismatch(mongo, collection, key, expected_version)
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
        selector: dict[str, str | int] = {"_id": key}
        if expected_version is not None:
            selector["version"] = check_version(expected_version)
        update: dict[str, dict[str, object]] = {"$inc": {"version": 1}}
        copied = patch_changes(changes)
        if copied:
            update["$set"] = {f"data.{field}": value for field, value in copied.items()}
        async with self._calling(collection) as mongo:
            raw = await mongo.find_one_and_update(selector, update, return_document=ReturnDocument.AFTER)
            if raw is None:
                if expected_version is None:
                    raise not_found(collection, key)
                await self._raise_mismatch(mongo, collection, key, expected_version)
        return _document(raw)

    async def upsert(self, collection: str, key: str, data: Mapping[str, Any]) -> Document:
        check_key(key)
        copied = json_object(data)
        update = {"$set": {"data": copied}, "$inc": {"version": 1}}
        async with self._calling(collection) as mongo:
            for attempt in (1, 2):
                try:
                    raw = await mongo.find_one_and_update(
                        {"_id": key},
                        update,
                        upsert=True,
                        projection={"version": True},
                        return_document=ReturnDocument.AFTER,
                    )
                    break
                except DuplicateKeyError:
                    # Two upserts raced to create the key; the loser retries as an update.
                    if attempt == 2:
                        raise
        return Document(key, int(raw["version"]), copied)

    async def delete(self, collection: str, key: str, *, expected_version: int | None = None) -> bool:
        check_key(key)
        selector: dict[str, str | int] = {"_id": key}
        if expected_version is not None:
            selector["version"] = check_version(expected_version)
        async with self._calling(collection) as mongo:
            result = await mongo.delete_one(selector)
            if result.deleted_count == 1:
                return True
            if expected_version is None:
                return False
            raw = await mongo.find_one({"_id": key}, projection={"version": True})
        if raw is None:
            return False
        raise version_conflict(collection, key, expected_version, int(raw["version"]))

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
        selector = mongo_filter(parse_where(where))
        sort = [("data." + key.field, -1 if key.descending else 1) for key in parse_order_by(order_by)]
        sort.append(("_id", 1))
        limit, offset = check_paging(limit, offset)
        async with self._calling(collection) as mongo:
            if limit == 0:  # MongoDB reads limit 0 as "no limit"
                return []
            cursor = mongo.find(selector, sort=sort, skip=offset, limit=limit or 0)
            raws = await cursor.to_list(length=None)
        return [_document(raw) for raw in raws]

    async def count(self, collection: str, where: Where | None = None) -> int:
        selector = mongo_filter(parse_where(where))
        async with self._calling(collection) as mongo:
            return int(await mongo.count_documents(selector))

    async def delete_many(self, collection: str, where: Where) -> int:
        selector = mongo_filter(parse_required_where(where))
        async with self._calling(collection) as mongo:
            result = await mongo.delete_many(selector)
        return int(result.deleted_count)

    # -- lifecycle ---------------------------------------------------------

    async def ping(self) -> None:
        async with self._translating():
            await self._database.command("ping")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    # -- helpers -----------------------------------------------------------

    @asynccontextmanager
    async def _calling(self, collection: str) -> AsyncIterator[Any]:
        """Check the collection name and translate driver errors; yields the motor collection."""
        check_collection(collection)
        async with self._translating():
            yield self._database[collection]

    @asynccontextmanager
    async def _translating(self) -> AsyncIterator[None]:
        if self._closed:
            raise Unavailable("the document store is closed")
        try:
            yield
        except (ConnectionFailure, ExecutionTimeout, WTimeoutError) as err:
            # ConnectionFailure covers AutoReconnect, NetworkTimeout and ServerSelectionTimeoutError.
            logger.warning("MongoDB at %s unavailable: %s", self._hosts, type(err).__name__)
            logger.debug("MongoDB driver said: %s", err)
            raise Unavailable(
                f"MongoDB at {self._hosts} is unreachable or did not answer in time; retry later",
                details={"backend": "mongodb"},
            ) from None
        except (DocumentTooLarge, InvalidDocument) as err:
            raise ValidationFailed(f"MongoDB cannot store the document: {err}") from None
        except OperationFailure as err:
            if err.code in _AUTH_FAILURE_CODES:
                raise Unavailable(
                    f"MongoDB at {self._hosts} refused the store's credentials or permissions",
                    details={"backend": "mongodb"},
                ) from None
            logger.error("MongoDB operation failed (code %s): %s", err.code, err)
            raise NsflError("the document store failed; see the service logs") from None
        except PyMongoError as err:
            logger.error("MongoDB driver error: %s", err)
            raise NsflError("the document store failed; see the service logs") from None

    async def _raise_mismatch(self, mongo: Any, collection: str, key: str, expected_version: int) -> None:
        raw = await mongo.find_one({"_id": key}, projection={"version": True})
        if raw is None:
            raise not_found(collection, key)
        raise version_conflict(collection, key, expected_version, int(raw["version"]))


def _check_database_name(name: str) -> None:
    if not name or len(name.encode()) > 63 or _DATABASE_NAME_FORBIDDEN.intersection(name):
        raise ValueError(f"database name {name[:64]!r} is not allowed by MongoDB")


def _without_secrets(text: str, userinfo: str) -> str:
    """``text`` with the URL's user information (raw and decoded password) blanked out."""
    password = userinfo.partition(":")[2]
    for secret in (userinfo, password, unquote(password)):
        if secret:
            text = text.replace(secret, "***")
    return text
