"""``run_task``: one task from ``task.json`` to an accepted upload and ``result.json``.

The task manager forks a warm worker (torch or tensorflow already imported)
and calls :func:`run_task` in it with stdout and stderr redirected to
``executor.log``; ``python -m task_executor <task_dir>`` does the same from a
shell.  The steps, each failing with an :class:`~libs.errors.NsflError` whose
code and message become the ``result.json`` reason and whose catalogue exit
code becomes the process's:

1. read and check ``task.json``, and that the entry script exists;
2. for ``train`` and ``evaluate``, get the round's global model, verified,
   whichever way it came (:mod:`~task_executor.model_source`), and decode it;
3. run the user's code (:func:`~task_executor.execution.execute`);
4. build the upload: for ``train`` the delta ``trained - global`` (the
   trained weights checked first: same names, shapes and dtypes, all finite),
   for ``init`` the full initial weights, for ``evaluate`` nothing but metrics;
5. upload it and exit 0 only if the coordinator accepted it.

The channel to the coordinator is opened once per process and kept
(:mod:`task_executor.channels`, which says why forking user code is still
safe), so a long-lived job executor pays its setup once per job.  Client-side clipping, differential privacy and
masking (DESIGN §5) sit between steps 4 and 5: the job's client-side algorithm
(:mod:`~task_executor.client_algorithms`: FedProx, SCAFFOLD, local DP) shapes the
delta, and a secure round sends it masked instead.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path

from libs.aggregation.attachments import Attachments
from libs.aggregation.attachments import split as split_attachments
from libs.errors import CATALOGUE, InvalidWeights, NsflError, UpdateRejected
from libs.structured_logging import log_context
from libs.weights.deltas import compute_delta
from libs.weights.tensors import WeightMap, decode, encode, sha256_hex, validate_update
from task_executor import settings as executor_settings
from task_executor.client_algorithms import ClientRound
from task_executor.coordinator_client import CoordinatorClient, update_header
from task_executor.errors import InvalidTask, TaskWithdrawn
from task_executor.evaluation import evaluate_first
from task_executor.execution import execute
from task_executor.model_source import global_model, task_for_round
from task_executor.secure_aggregation import contribute, prefetch_task_plan, secure_round_required
from task_executor.session import Outcome
from task_executor.settings import ExecutorSettings
from task_executor.task import ResultJson, TaskSpec, read_task, write_result

log = logging.getLogger(__name__)

SCRIPT_SECONDS = "nsfl.script_seconds"


def check_entry(spec: TaskSpec) -> None:
    """The entry script must be a file and its working directory a directory."""
    if not spec.entry.script.is_file():
        raise InvalidTask(f"the task's entry script {spec.entry.script} is not a file on this client")
    if not spec.entry.working_dir.is_dir():
        raise InvalidTask(f"the task's working directory {spec.entry.working_dir} is not a directory")


def update_payload(
    spec: TaskSpec, outcome: Outcome, global_weights: WeightMap | None, algorithm: ClientRound | None = None
) -> bytes:
    """The safetensors bytes to upload for this kind of task (empty for evaluation).

    For ``train``, ``algorithm`` adds what the job's algorithm sends beside the delta
    (SCAFFOLD's control-variate delta) and applies local differential privacy.
    """
    if spec.kind == "evaluate":
        return b""
    weights = outcome.weights
    assert weights is not None, "execute() guarantees committed weights for train and init"
    reference = weights if global_weights is None else global_weights
    try:
        validate_update(weights, reference, require_float=False)
    except InvalidWeights as exc:
        raise InvalidWeights(
            f"the committed weights cannot be uploaded: {exc.message}", details=exc.details
        ) from None
    if spec.kind == "init":
        return encode(weights)
    delta = compute_delta(weights, reference)
    return encode(delta if algorithm is None else algorithm.finish(delta))


def _perform(spec: TaskSpec, settings: ExecutorSettings, task_dir: Path) -> Outcome:
    check_entry(spec)
    awaited = b""
    if spec.model_follows:  # offered ahead: the round's model (and final parameters) come now
        spec, awaited = task_for_round(spec, settings)
    prefetch_task_plan(spec, settings)  # answered while the model downloads and the user's code runs
    global_weights: WeightMap | None = None
    attachments: Attachments = {}
    if spec.kind != "init":
        payload = global_model(spec, settings, task_dir, awaited=awaited)
        # Tensors under reserved names (SCAFFOLD's c, broadcast files) travel beside the model.
        global_weights, attachments = split_attachments(decode(payload))

    algorithm = ClientRound(spec, global_weights, attachments)
    started = time.perf_counter()
    # The previous round's model, evaluated before training (task_executor.evaluation).
    evaluation = evaluate_first(spec, global_weights) if spec.evaluate_first else {}
    with algorithm.active():  # nsfl.fedprox / nsfl.scaffold / nsfl.get_broadcast_file
        outcome = execute(spec, global_weights)
    outcome.metrics.update(evaluation)
    # Reported beside the user's metrics so the coordinator can tell the platform's
    # overhead per round from the time spent in the user's code.
    script_seconds = time.perf_counter() - started

    if spec.kind == "train" and secure_round_required(spec, settings):
        assert global_weights is not None
        metrics = {**outcome.metrics, SCRIPT_SECONDS: script_seconds}
        contribute(spec, settings, outcome, global_weights, metrics, algorithm)
        algorithm.committed()
        return outcome

    body = update_payload(spec, outcome, global_weights, algorithm)
    num_samples = outcome.num_samples or 0
    header = update_header(
        spec,
        num_samples=num_samples,
        metrics={**outcome.metrics, **algorithm.metrics, SCRIPT_SECONDS: script_seconds},
        payload_sha256=sha256_hex(body) if body else "",
        payload_size=len(body),
    )
    with CoordinatorClient(spec.coordinator_endpoint, spec.job_id, settings, spec.deadline_unix) as client:
        result = client.upload(header, body)
    if not result.accepted:
        raise UpdateRejected(f"the coordinator rejected the {spec.kind} update: {result.reason}")
    algorithm.committed()
    log.info(
        "%s update accepted (%d bytes, %d samples, metrics %s)",
        spec.kind,
        len(body),
        num_samples,
        outcome.metrics,
    )
    return outcome


def _failed(reason: str) -> ResultJson:
    return {"state": "failed", "reason": reason, "num_samples": 0, "metrics": {}}


def _record(task_dir: Path, result: ResultJson) -> None:
    try:
        write_result(task_dir, result)
    except OSError as exc:
        print(f"nsfl: cannot write {task_dir}/result.json: {exc}", file=sys.stderr, flush=True)


def run_task(task_dir: Path, settings: ExecutorSettings | None = None) -> int:
    """Run the task in ``task_dir``; 0 when the coordinator accepted its upload.

    Never raises for a task failure: the reason is in ``result.json`` and on
    stderr, and the return value is the catalogue exit code of the error.
    """
    task_dir = Path(task_dir)
    try:
        spec = read_task(task_dir)
        with log_context(
            job=spec.job_id, round=spec.round, client=spec.client_id, task=spec.task_id, attempt=spec.attempt
        ):
            outcome = _perform(spec, settings or executor_settings.load(), task_dir)
    except TaskWithdrawn as exc:
        print(f"nsfl: task withdrawn, nothing to do: {exc}", file=sys.stderr, flush=True)
        _record(task_dir, {"state": "withdrawn", "reason": str(exc), "num_samples": 0, "metrics": {}})
        return 0
    except NsflError as exc:
        reason = f"{exc.code}: {exc.message}"
        print(f"nsfl: task failed: {reason}", file=sys.stderr, flush=True)
        _record(task_dir, _failed(reason))
        return exc.entry.exit_code or 1
    except Exception:
        # A bug of the executor itself, not of the user's script (execute() catches those).
        traceback.print_exc(file=sys.stderr)
        _record(task_dir, _failed(f"Internal: {CATALOGUE['Internal'].public_message} (executor.log)"))
        return 1
    _record(
        task_dir,
        {
            "state": "succeeded",
            "reason": "",
            "num_samples": outcome.num_samples or 0,
            "metrics": dict(outcome.metrics),
        },
    )
    return 0
