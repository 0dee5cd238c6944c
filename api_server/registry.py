"""The model registry: named models with numbered versions, checksums and lineage (DESIGN §7).

Storage: one document per model in the ``models`` collection, key
``<ns>/<name>``::

    {namespace, name, runtime, description, createdAt, updatedAt,
     latest: 3 | null, nextVersion: 4,
     versions: {"1": {key, sha256, size, createdAt, description,
                      lineage: {job, round, clients} | null}, ...}}

and each version's weights in the object store at
``libs.objects.layout.model_key(ns, name, version)``.

How a version is added, and why in this order:

1. **Reserve a number** by compare-and-set on ``nextVersion``.  Two uploads
   to the same model at once get different numbers, so they never write
   the same object key.  Numbers are never reused: a deleted version 3 is
   never replaced by different weights that a job could mistake for it.
2. **Stream the bytes** to the version's key with the size limit and the
   announced checksum; the object store publishes them atomically only
   when complete and verified.  On failure the reservation is handed back
   if no one reserved after it (else the number stays unused: a gap, which
   is harmless), and nothing is visible.
3. **Record the version** in the model document by compare-and-set,
   retrying on conflicts.  If the model was deleted meanwhile, the object
   is removed again and the caller gets 404.

A model is deleted objects-first, then the document (with its version as
the CAS token, so an upload that landed meanwhile makes it go round
again); a reader therefore never finds a version whose weights are gone
for good.  The registry never reads a path from a user: keys are built by
``model_key`` from checked names.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from libs.errors import AlreadyExists, NotFound, NsflError, ValidationFailed, VersionConflict
from libs.objects import ObjectStore, PutData, model_key, validate_prefix
from libs.records import MODELS, Lineage, ModelDocument, ModelVersion, as_model
from libs.store import Document, DocumentStore

log = logging.getLogger(__name__)

COLLECTION = MODELS
CAS_ATTEMPTS = 20
RUNTIMES = ("pytorch", "tensorflow")


def model_doc_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


class VersionView(TypedDict):
    """A model version as REST shows it (``ModelVersion`` in ``/openapi.json``)."""

    version: int
    sha256: str | None
    size: int | None
    createdAt: float | None
    description: str
    lineage: Lineage | None


class ModelView(TypedDict):
    """A model as REST shows it (``Model`` in ``/openapi.json``): its versions as a list, by number."""

    namespace: str | None
    name: str | None
    runtime: str | None
    description: str
    latest: int | None
    createdAt: float | None
    updatedAt: float | None
    versions: list[VersionView]


def version_view(number: int, entry: Mapping[str, Any]) -> VersionView:
    """A version as REST shows it (without the object key: callers download through the API)."""
    return {
        "version": number,
        "sha256": entry.get("sha256"),
        "size": entry.get("size"),
        "createdAt": entry.get("createdAt"),
        "description": entry.get("description", ""),
        "lineage": entry.get("lineage"),
    }


def model_view(data: ModelDocument) -> ModelView:
    """A stored model as REST shows it; tolerant of fields an older document lacks."""
    versions = data.get("versions") or {}
    return {
        "namespace": data.get("namespace"),
        "name": data.get("name"),
        "runtime": data.get("runtime"),
        "description": data.get("description", ""),
        "latest": data.get("latest"),
        "createdAt": data.get("createdAt"),
        "updatedAt": data.get("updatedAt"),
        "versions": [version_view(int(n), versions[n]) for n in sorted(versions, key=int)],
    }


class ModelRegistry:
    """Registry operations over a document store and an object store."""

    def __init__(
        self, store: DocumentStore, objects: ObjectStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._objects = objects
        self._clock = clock

    async def create(self, namespace: str, name: str, *, runtime: str, description: str) -> ModelView:
        now = self._clock()
        data: ModelDocument = {
            "namespace": namespace, "name": name, "runtime": runtime, "description": description,
            "createdAt": now, "updatedAt": now, "latest": None, "nextVersion": 1, "versions": {},
        }  # fmt: skip
        try:
            document = await self._store.insert(COLLECTION, model_doc_key(namespace, name), data)
        except AlreadyExists:
            raise AlreadyExists(
                f"model {name!r} already exists in namespace {namespace!r}; add a version to it instead",
                details={"model": name},
            ) from None
        return model_view(as_model(document.data))

    async def ensure(self, namespace: str, name: str, *, runtime: str, description: str) -> None:
        """Create the model unless it exists; an existing model must have the same runtime."""
        existing = await self._store.try_get(COLLECTION, model_doc_key(namespace, name))
        if existing is None:
            with contextlib.suppress(AlreadyExists):
                await self.create(namespace, name, runtime=runtime, description=description)
            existing = await self.document(namespace, name)
        if existing.data.get("runtime") != runtime:
            raise ValidationFailed(
                f"body.model: model {name!r} holds {existing.data.get('runtime')} models, "
                f"but this one is {runtime}; register it under another name",
                details={"errors": [{"path": "body.model", "message": "runtime differs"}]},
            )

    async def document(self, namespace: str, name: str) -> Document:
        document = await self._store.try_get(COLLECTION, model_doc_key(namespace, name))
        if document is None:
            raise NotFound(f"model {name!r} not found in namespace {namespace!r}", details={"model": name})
        return document

    async def get(self, namespace: str, name: str) -> ModelView:
        return model_view(as_model((await self.document(namespace, name)).data))

    async def list(
        self, namespace: str, *, limit: int, after: str | None
    ) -> tuple[list[ModelView], str | None]:
        """One page of models by name, and the name to continue after (None on the last page)."""
        where: dict[str, Any] = {"namespace": namespace}
        if after is not None:
            where["name"] = {"$gt": after}
        documents = await self._store.find(COLLECTION, where, order_by=[("name", 1)], limit=limit + 1)
        page = [model_view(as_model(d.data)) for d in documents[:limit]]
        return page, (str(page[-1]["name"]) if len(documents) > limit else None)

    async def version(self, namespace: str, name: str, number: int | None) -> tuple[int, ModelVersion]:
        """Version ``number`` (the latest when None) and its entry; ``NotFound`` naming what is missing."""
        data = as_model((await self.document(namespace, name)).data)
        if number is None:
            number = data.get("latest")
            if number is None:
                raise NotFound(f"model {name!r} has no versions yet", details={"model": name})
        entry = (data.get("versions") or {}).get(str(number))
        if entry is None:
            raise NotFound(
                f"model {name!r} has no version {number}", details={"model": name, "version": number}
            )
        return int(number), ModelVersion(**entry)

    async def add_version(
        self,
        namespace: str,
        name: str,
        data: PutData,
        *,
        expected_sha256: str | None,
        max_size: int | None,
        description: str,
        lineage: Lineage | None,
    ) -> VersionView:
        """Store ``data`` as the next version of the model (see the module docstring for the steps)."""
        number = await self._reserve(namespace, name)
        key = model_key(namespace, name, number)
        try:
            info = await self._objects.put(key, data, expected_sha256=expected_sha256, max_size=max_size)
        except BaseException:
            await self._release(namespace, name, number)
            raise
        entry: ModelVersion = {
            "key": key, "sha256": info.sha256, "size": info.size, "createdAt": self._clock(),
            "description": description, "lineage": lineage,
        }  # fmt: skip
        try:
            await self._record(namespace, name, number, entry)
        except BaseException:
            with contextlib.suppress(NsflError):
                await self._objects.delete(key)
            raise
        log.info("model %s/%s version %d added (%d bytes)", namespace, name, number, info.size)
        return version_view(number, entry)

    async def delete_version(self, namespace: str, name: str, number: int) -> None:
        for _ in range(CAS_ATTEMPTS):
            document = await self.document(namespace, name)
            versions = dict(document.data.get("versions") or {})
            entry = versions.pop(str(number), None)
            if entry is None:
                raise NotFound(
                    f"model {name!r} has no version {number}", details={"model": name, "version": number}
                )
            latest = max((int(n) for n in versions), default=None)
            changes = {"versions": versions, "latest": latest, "updatedAt": self._clock()}
            try:
                await self._store.patch(COLLECTION, document.key, changes, expected_version=document.version)
            except VersionConflict:
                continue
            await self._delete_object(namespace, str(entry.get("key", "")))
            return
        raise VersionConflict(f"model {name!r} kept changing; retry")

    async def delete(self, namespace: str, name: str) -> None:
        prefix = validate_prefix(f"{namespace}/models/{name}/")
        for _ in range(CAS_ATTEMPTS):
            document = await self.document(namespace, name)
            await self._objects.delete_prefix(prefix)
            try:
                await self._store.delete(COLLECTION, document.key, expected_version=document.version)
            except VersionConflict:
                continue
            log.info("model %s/%s deleted", namespace, name)
            return
        raise VersionConflict(f"model {name!r} kept changing; retry")

    async def _reserve(self, namespace: str, name: str) -> int:
        for _ in range(CAS_ATTEMPTS):
            document = await self.document(namespace, name)
            versions = document.data.get("versions") or {}
            number = int(document.data.get("nextVersion") or max((int(n) for n in versions), default=0) + 1)
            try:
                await self._store.patch(
                    COLLECTION, document.key, {"nextVersion": number + 1}, expected_version=document.version
                )
            except VersionConflict:
                continue
            return number
        raise VersionConflict(f"model {name!r} kept changing; retry the upload")

    async def _release(self, namespace: str, name: str, number: int) -> None:
        """Hand a reserved number back if it is still the last one reserved (best effort)."""
        try:
            document = await self._store.try_get(COLLECTION, model_doc_key(namespace, name))
            if document is not None and document.data.get("nextVersion") == number + 1:
                await self._store.patch(
                    COLLECTION, document.key, {"nextVersion": number}, expected_version=document.version
                )
        except NsflError as exc:
            log.info("version %d of model %s/%s stays unused: %s", number, namespace, name, exc.message)

    async def _record(self, namespace: str, name: str, number: int, entry: ModelVersion) -> None:
        for _ in range(CAS_ATTEMPTS):
            document = await self.document(namespace, name)
            versions = dict(document.data.get("versions") or {})
            versions[str(number)] = entry
            latest = max(int(n) for n in versions)
            changes = {"versions": versions, "latest": latest, "updatedAt": self._clock()}
            try:
                await self._store.patch(COLLECTION, document.key, changes, expected_version=document.version)
            except VersionConflict:
                continue
            return
        raise VersionConflict(f"model {name!r} kept changing; retry the upload")

    async def _delete_object(self, namespace: str, key: str) -> None:
        # A key read back from the store is checked to lie in the namespace before it is used.
        if not key.startswith(f"{namespace}/models/"):
            log.error("model version record points outside its namespace: %r; not deleting", key)
            return
        try:
            await self._objects.delete(key)
        except NsflError as exc:
            log.warning("could not delete %s (left unreferenced): %s", key, exc.message)
