"""Adapter: saving and finding a job's checkpoints (object store + document store).

A checkpoint is one safetensors file holding the global model (tensors named
``model/<name>``), the server optimiser's array state
(``optimizer/<slot>/<name>``) and, in its metadata, the round, the
optimiser's scalar state and the privacy accountant's state as JSON.

Visibility rule (DESIGN §5.5): the file is written completely and its SHA-256
checked by the object store *before* the record in the ``checkpoints``
collection is created; readers only ever find checkpoints through that
record, so a coordinator killed mid-write leaves at most an unreferenced
object, never a checkpoint that cannot be loaded.  Loading verifies the
checksum again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypedDict

import numpy as np

from libs.errors import ChecksumMismatch, CorruptPayload
from libs.objects.layout import checkpoint_key, output_key
from libs.objects.protocol import ObjectStore
from libs.records import CHECKPOINTS, CheckpointRecord, FinalModel, RoundRecord, as_checkpoint
from libs.records import checkpoint_key as checkpoint_record_key
from libs.store.protocol import DocumentStore
from libs.weights.tensors import decode, encode, read_metadata, sha256_hex

WeightMap = dict[str, np.ndarray]
FORMAT = "nsfl-checkpoint-v1"

ServerState: TypeAlias = Mapping[str, object]
"""The job algorithm's state to keep (``JobAlgorithm.state``): a dict value is a map of arrays
(stored as tensors), anything else a JSON scalar or list (stored in the metadata)."""


class CheckpointExtra(TypedDict, total=False):
    """The checkpoint's ``extra`` metadata: the round history a resumed job reports again."""

    history: list[RoundRecord]


@dataclass(frozen=True)
class Checkpoint:
    round: int
    weights: WeightMap
    optimizer_arrays: dict[str, WeightMap]
    optimizer_scalars: dict[str, Any]  # JSON from the metadata, as JobAlgorithm.state gave it
    extra: CheckpointExtra
    record: CheckpointRecord


def pack(round_number: int, weights: WeightMap, optimizer_state: ServerState,
         extra: CheckpointExtra, *, extra_json: str | None = None) -> bytes:
    """The checkpoint's bytes; ``extra_json``, when given, is ``extra`` already encoded."""
    tensors: dict[str, np.ndarray] = {f"model/{name}": array for name, array in weights.items()}
    scalars: dict[str, object] = {}
    for slot, value in optimizer_state.items():
        if isinstance(value, dict):
            for name, array in value.items():
                tensors[f"optimizer/{slot}/{name}"] = np.asarray(array)
        else:
            scalars[slot] = value
    metadata = {
        "format": FORMAT,
        "round": str(round_number),
        "optimizer_scalars": json.dumps(scalars),
        "extra": json.dumps(extra) if extra_json is None else extra_json,
    }
    return encode(tensors, metadata)


def unpack(payload: bytes, record: CheckpointRecord) -> Checkpoint:
    metadata = read_metadata(payload)
    if metadata.get("format") != FORMAT:
        raise CorruptPayload(f"checkpoint {record.get('key')} is not an nsfl checkpoint")
    tensors = decode(payload, copy=True)
    weights: WeightMap = {}
    optimizer: dict[str, WeightMap] = {}
    for name, array in tensors.items():
        section, _, rest = name.partition("/")
        if section == "model":
            weights[rest] = array
        elif section == "optimizer":
            slot, _, tensor = rest.partition("/")
            optimizer.setdefault(slot, {})[tensor] = array
    return Checkpoint(round=int(metadata["round"]), weights=weights, optimizer_arrays=optimizer,
                      optimizer_scalars=json.loads(metadata.get("optimizer_scalars", "{}")),
                      extra=json.loads(metadata.get("extra", "{}")), record=record)


class CheckpointStore:
    def __init__(self, documents: DocumentStore, objects: ObjectStore, *, namespace: str, job: str) -> None:
        self.documents = documents
        self.objects = objects
        self.namespace = namespace
        self.job = job
        self.job_id = f"{namespace}/{job}"

    def _record_key(self, round_number: int) -> str:
        return checkpoint_record_key(self.namespace, self.job, round_number)

    async def save(self, round_number: int, weights: WeightMap, optimizer_state: ServerState,
                   extra: CheckpointExtra) -> CheckpointRecord:
        return await self.save_packed(round_number, pack(round_number, weights, optimizer_state, extra))

    async def save_packed(self, round_number: int, payload: bytes) -> CheckpointRecord:
        """Store a checkpoint :func:`pack` made, verify it, then record it (it is visible from then on)."""
        digest = sha256_hex(payload)
        key = checkpoint_key(self.namespace, self.job, round_number)
        info = await self.objects.put(key, payload, expected_sha256=digest)
        stored = await self.objects.stat(key)
        if stored.sha256 != digest or stored.size != len(payload):
            raise ChecksumMismatch(f"checkpoint {key} did not verify after writing")
        record: CheckpointRecord = {"jobId": self.job_id, "namespace": self.namespace, "job": self.job, "round": round_number,
                  "key": key, "sha256": info.sha256, "size": info.size, "createdAt": time.time()}
        await self.documents.upsert(CHECKPOINTS, self._record_key(round_number), dict(record))
        return record

    async def records(self) -> list[CheckpointRecord]:
        docs = await self.documents.find(CHECKPOINTS, {"jobId": self.job_id}, order_by=[("round", 1)])
        return [as_checkpoint(doc.data) for doc in docs]

    async def latest(self) -> Checkpoint | None:
        docs = await self.documents.find(CHECKPOINTS, {"jobId": self.job_id}, order_by=[("round", -1)],
                                         limit=1)
        if not docs:
            return None
        return await self.load(as_checkpoint(docs[0].data))

    async def load(self, record: CheckpointRecord) -> Checkpoint:
        payload = await self.objects.read(record["key"])
        if sha256_hex(payload) != record["sha256"]:
            raise ChecksumMismatch(f"checkpoint {record['key']} does not match its recorded SHA-256")
        return unpack(payload, record)

    async def save_output(self, name: str, payload: bytes) -> FinalModel:
        key = output_key(self.namespace, self.job, name)
        info = await self.objects.put(key, payload, expected_sha256=sha256_hex(payload))
        return {"key": key, "sha256": info.sha256, "size": info.size}
