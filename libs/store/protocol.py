"""What every document store promises: the :class:`DocumentStore` protocol.

The control plane keeps its state (jobs, job events, rounds, clients, models,
checkpoints) as JSON documents in named collections.  Two backends implement
this protocol, SQLite for a single machine and MongoDB for a cluster, and one
contract suite (``tests/contract/test_document_store.py``) runs against both,
so code written against this protocol behaves the same on either.

Why a version number on every document instead of transactions: components
run in separate processes (scheduler, API server, coordinators) and update the
same job or round.  Compare-and-set on ``version`` (:meth:`replace`,
:meth:`patch` with ``expected_version``) gives each writer a cheap, portable
way to detect that someone else got there first, without holding locks across
network calls.  A writer that loses gets :class:`~libs.errors.VersionConflict`
with the current version in ``details["current_version"]``, re-reads and
decides again.

Rules shared by every backend (checked in :mod:`libs.store.validation` and
:mod:`libs.store.query`):

- collection names match ``^[a-z][a-z0-9_]{0,62}$``; collections are created
  on first use;
- keys are non-empty strings of at most 512 characters without NUL; there is
  no namespacing built in: callers put a ``namespace`` field in ``data`` and
  use keys such as ``"ns/name"``, then filter with ``{"namespace": ns}``;
- ``data`` is a JSON object (string keys, finite numbers, integers within the
  signed 64-bit range; object keys non-empty, without ``.`` or NUL and not
  starting with ``$``); anything else is
  :class:`~libs.errors.ValidationFailed` and nothing is stored;
- every returned :class:`Document` holds a fresh ``data`` dict that the caller
  may mutate; it never aliases the caller's input or another result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from libs.json_values import JsonObject

Where = Mapping[str, Any]
"""A filter: every entry must hold (a logical AND).

Keys are field names of ``data``, top-level (``"namespace"``) or dotted into
nested objects (``"status.state"``); they match
``^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*$``.  A value is either a
JSON scalar, meaning equality (``None`` matches null or a missing field), or a
mapping of operators, all of which must hold:

- ``{"$in": [v, ...]}``: equal to one of the scalars (an empty list matches nothing);
- ``{"$ne": v}``: not equal to the scalar (a missing field is "not equal");
- ``{"$lt" | "$lte" | "$gt" | "$gte": v}``: ordered comparison with a number
  or a string; only values of the same kind match, as in MongoDB (a string
  field never matches ``{"$gt": 1}``);
- ``{"$exists": bool}``: the field is present (a null value counts as present).

Whole objects and arrays cannot be compared.  Do not filter on a field that
holds an array: SQLite compares the array as a whole and MongoDB its
elements, so the backends would disagree.
"""

OrderBy = Sequence[tuple[str, int]]
"""Sort keys: ``(field, 1)`` ascending or ``(field, -1)`` descending; fields may be dotted."""


@dataclass(frozen=True)
class Document:
    """One stored document as read or written.

    ``version`` starts at 1 and grows by one on each successful write; it is
    the token for compare-and-set.  ``data`` is a fresh JSON-compatible dict.
    """

    key: str
    version: int
    data: JsonObject


@runtime_checkable
class DocumentStore(Protocol):
    """Collections of versioned JSON documents with unique keys.

    Errors (all from :mod:`libs.errors`): ``InvalidKey`` for a bad collection
    name or key, ``ValidationFailed`` for data, filters or paging that are not
    valid, ``AlreadyExists``, ``NotFound``, ``VersionConflict`` as documented
    per method, and ``Unavailable`` when the backend cannot be reached or the
    store was closed.
    """

    async def insert(self, collection: str, key: str, data: Mapping[str, Any]) -> Document:
        """Create a document at version 1; ``AlreadyExists`` (and no change) if the key exists."""
        ...

    async def get(self, collection: str, key: str) -> Document:
        """Read a document; ``NotFound`` if there is none."""
        ...

    async def try_get(self, collection: str, key: str) -> Document | None:
        """Read a document, or ``None`` if there is none."""
        ...

    async def replace(
        self, collection: str, key: str, data: Mapping[str, Any], *, expected_version: int
    ) -> Document:
        """Replace ``data`` if the stored version is ``expected_version`` (compare-and-set).

        ``VersionConflict`` (details: ``current_version``) if it is not, ``NotFound`` if
        the document is gone.
        """
        ...

    async def patch(
        self,
        collection: str,
        key: str,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> Document:
        """Set the top-level fields in ``changes`` and keep the others.

        A value of ``None`` stores null; patch never removes a field (use
        :meth:`replace` for that).  Keys follow the rules for ``data``, so a key
        always names one top-level field.  With ``expected_version`` this is compare-and-set like
        :meth:`replace`; without it the backend applies the change atomically
        against whatever version is current.  ``NotFound`` if there is no document.
        """
        ...

    async def upsert(self, collection: str, key: str, data: Mapping[str, Any]) -> Document:
        """Write ``data`` whatever is stored (last writer wins); version + 1, or 1 if new."""
        ...

    async def delete(self, collection: str, key: str, *, expected_version: int | None = None) -> bool:
        """Delete a document; ``False`` if there was none.

        With ``expected_version``, ``VersionConflict`` (and no change) if the stored
        version differs.
        """
        ...

    async def find(
        self,
        collection: str,
        where: Where | None = None,
        *,
        order_by: OrderBy = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Document]:
        """Documents matching ``where``, sorted by ``order_by`` then by key (so pages are stable).

        Missing and null values sort first ascending, last descending.
        """
        ...

    async def count(self, collection: str, where: Where | None = None) -> int:
        """How many documents match ``where``."""
        ...

    async def delete_many(self, collection: str, where: Where) -> int:
        """Delete the documents matching ``where`` (``{}`` deletes all); returns how many."""
        ...

    async def ping(self) -> None:
        """Return if the backend answers; ``Unavailable`` otherwise."""
        ...

    async def close(self) -> None:
        """Release connections; later calls raise ``Unavailable``.  Closing twice is harmless."""
        ...
