"""The round's global model for a task: verified bytes, whichever way the model came.

A model reaches an executor one of three ways: inside the offer (a small
model; the task manager put it in the task folder as ``model_file``), inside
the ``AwaitModel`` answer of a task offered ahead (a small model again), or
streamed by ``DownloadModel``.  Whichever it is, the bytes go through one
:class:`~libs.weights.streaming.BlobReceiver` made for the task's
``model_sha256``, so there is one SHA-256 check, one size bound
(``max_model_bytes``) and one error for a model that is not the task's: a
streamed model is checked as it arrives (:func:`~libs.weights.streaming.receive_frames_sync`),
a model that came whole in one write.

A task offered ahead first learns its round here (:func:`task_for_round`): the
answer gives the round's model and the task as the round offers it
(:func:`libs.tasks.serde.for_round`), or says the task was withdrawn.
"""

from __future__ import annotations

import logging
from pathlib import Path

from libs.errors import ChecksumMismatch
from libs.tasks.serde import for_round
from libs.weights.streaming import BlobReceiver
from libs.weights.tensors import Buffer
from task_executor.coordinator_client import CoordinatorClient
from task_executor.errors import InvalidTask, TaskWithdrawn
from task_executor.settings import ExecutorSettings
from task_executor.task import TaskSpec

log = logging.getLogger(__name__)


def task_for_round(spec: TaskSpec, settings: ExecutorSettings) -> tuple[TaskSpec, bytes]:
    """For a task offered ahead: wait for its round; the task as the round offers it and the model if it
    came in the answer (empty: it is downloaded).  :class:`TaskWithdrawn` if the round did not come.
    """
    with CoordinatorClient(spec.coordinator_endpoint, spec.job_id, settings, spec.deadline_unix) as client:
        reply = client.await_model(spec)
    if not reply.ready:
        raise TaskWithdrawn(reply.reason or "the coordinator withdrew the task")
    return for_round(spec, reply), reply.model


def _verified(data: Buffer, spec: TaskSpec, settings: ExecutorSettings, where: str) -> bytearray:
    """``data`` as a writable buffer (as a download is), once it is the task's model."""
    view = memoryview(data)
    receiver = BlobReceiver(view.nbytes, spec.model_sha256, max_size=settings.max_model_bytes)
    receiver.write(0, view)
    try:
        return receiver.finish()
    except ChecksumMismatch:
        raise ChecksumMismatch(
            f"the model {where} ({view.nbytes} bytes) is not model {spec.model_sha256[:12]}...; "
            "it was corrupted on its way"
        ) from None


def _offered(task_dir: Path, name: str) -> bytes:
    path = task_dir / name
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidTask(f"cannot read the task's model {path}: {exc.strerror or exc}") from None


def global_model(spec: TaskSpec, settings: ExecutorSettings, task_dir: Path, *, awaited: bytes = b"") -> bytearray:
    """The round's model for ``spec`` as verified safetensors bytes: ``awaited`` (the ``AwaitModel``
    answer's), else the offer's ``model_file``, else a download from the coordinator."""
    if awaited:
        payload, how = _verified(awaited, spec, settings, "in the AwaitModel answer"), "came in the AwaitModel answer"
    elif spec.model_file is not None:
        data = _offered(task_dir, spec.model_file)
        payload = _verified(data, spec, settings, f"that came with the task ({spec.model_file})")
        how = "came with the task"
    else:
        with CoordinatorClient(spec.coordinator_endpoint, spec.job_id, settings, spec.deadline_unix) as client:
            payload, how = client.download_model(spec), "downloaded"
    log.info("model %s %s (%d bytes)", spec.model_sha256[:12], how, len(payload))
    return payload
