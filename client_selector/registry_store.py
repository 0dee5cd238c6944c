"""Persisting client records in the document store (collection ``clients``, key = client id).

Why persist at all when liveness is in memory: a selector restart must not
forget who registered, what they declared, which jobs hold reservations on
them and which jobs they served (``untrainedFirst``).  The contract is that
after a restart every client is listed, ``lost`` until its task manager
reconnects.

What is written, and when: the selector owns the collection (one selector
per store), so writes are plain upserts (last writer wins) made on
registration, on loss, on reservation changes and at shutdown, never on
every heartbeat: heartbeats only move ``last_seen``, which matters while the
process lives and is written when the client is lost or the selector stops.
A client away longer than the retention period is deleted.

Document shape: labels and picks are stored as lists of objects rather than
maps because the store forbids ``.`` in object keys and label keys such as
``nsfl.io/zone`` have dots.  ``connected`` is session state and is never
stored.  A document that does not parse is logged and skipped, so one bad
entry cannot keep the selector from starting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from client_selector.registry import (
    ClientId,
    ClientRecord,
    DatasetInfo,
    JobId,
    Reservation,
    Resources,
)
from libs.store import DocumentStore

log = logging.getLogger(__name__)

COLLECTION = "clients"
SCHEMA_VERSION = 1


def record_to_data(record: ClientRecord) -> dict[str, Any]:
    """The JSON document for ``record`` (without its session state)."""
    return {
        "schema": SCHEMA_VERSION,
        "client_id": record.client_id,
        "runtimes": list(record.runtimes),
        "datasets": [{"name": d.name, "samples": d.samples, "tags": list(d.tags)} for d in record.datasets],
        "labels": [{"key": k, "value": v} for k, v in sorted(record.labels.items())],
        "resources": {
            "cpus": record.resources.cpus,
            "memory_mb": record.resources.memory_mb,
            "gpus": record.resources.gpus,
            "disk_mb": record.resources.disk_mb,
        },
        "max_parallel_tasks": record.max_parallel_tasks,
        "version": record.version,
        "registered_at": record.registered_at,
        "last_seen": record.last_seen,
        "reservations": [
            {"job_id": r.job_id, "round": r.round, "expires_at": r.expires_at} for r in record.reservations
        ],
        "picks": [{"job_id": job, "count": n} for job, n in record.picks.items()],
        "last_selected_at": record.last_selected_at,
        "source": record.source,
    }


def record_from_data(data: Mapping[str, Any]) -> ClientRecord:
    """The record a document holds, not connected; ``KeyError``/``TypeError``/``ValueError`` if malformed."""
    resources = data["resources"]
    return ClientRecord(
        client_id=ClientId(str(data["client_id"])),
        runtimes=tuple(str(r) for r in data["runtimes"]),
        datasets=tuple(
            DatasetInfo(name=str(d["name"]), samples=int(d["samples"]), tags=tuple(str(t) for t in d["tags"]))
            for d in data["datasets"]
        ),
        labels={str(item["key"]): str(item["value"]) for item in data["labels"]},
        resources=Resources(
            cpus=float(resources["cpus"]),
            memory_mb=int(resources["memory_mb"]),
            gpus=int(resources["gpus"]),
            disk_mb=int(resources["disk_mb"]),
        ),
        max_parallel_tasks=int(data["max_parallel_tasks"]),
        version=str(data["version"]),
        registered_at=float(data["registered_at"]),
        last_seen=float(data["last_seen"]),
        connected=False,
        reservations=tuple(
            Reservation(
                job_id=JobId(str(r["job_id"])), round=int(r["round"]), expires_at=float(r["expires_at"])
            )
            for r in data["reservations"]
        ),
        picks={str(p["job_id"]): int(p["count"]) for p in data["picks"]},
        last_selected_at=float(data["last_selected_at"]),
        source=str(data.get("source", "")),  # absent in documents written before sources were kept
    )


class RegistryStore:
    """Loads and saves :class:`ClientRecord`\\ s through a :class:`DocumentStore`."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def load_all(self) -> list[ClientRecord]:
        records = []
        for document in await self._store.find(COLLECTION):
            try:
                record = record_from_data(document.data)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("skipping unreadable client document %r: %s", document.key, exc)
                continue
            if record.client_id != document.key:
                log.warning("skipping client document %r: it names client %r", document.key, record.client_id)
                continue
            records.append(record)
        return records

    async def save(self, record: ClientRecord) -> None:
        await self._store.upsert(COLLECTION, record.client_id, record_to_data(record))

    async def delete(self, client_id: ClientId) -> None:
        """Forget a client (expired by retention); nothing happens if it was never stored."""
        await self._store.delete(COLLECTION, client_id)

    async def save_many(self, records: Iterable[ClientRecord]) -> None:
        for record in records:
            await self.save(record)
