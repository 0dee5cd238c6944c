"""Checking that what a job spec points at exists, before the job is accepted.

The schema can say that ``modelRef`` names a model; only the registry can
say that the model (and the version) exists.  Finding out at submission
is a 400 naming the field; finding out later is a job that fails in
STARTING, minutes after the user looked away.  So every initial model
source is resolved here, in the job's own namespace:

- ``modelRef``: the registry model and version (the latest if none is given);
- ``checkpointRef``: a recorded checkpoint of that job (any, if no round is given);
- ``modelPath``: an object under the namespace's prefix; the schema already
  refuses ``..`` and absolute keys, and the key is checked again by the
  object store's key rules, so a path can never leave the namespace.

All problems are reported together, like the schema's.
"""

from __future__ import annotations

from api_server.job_views import require_checkpoint
from api_server.registry import ModelRegistry
from libs.errors import InvalidKey, NotFound
from libs.jobspec import JobSpec
from libs.jobspec.messages import Problem
from libs.jobspec.validation import invalid
from libs.objects import ObjectStore, validate_key
from libs.store import DocumentStore


async def check_references(
    spec: JobSpec,
    namespace: str,
    *,
    store: DocumentStore,
    objects: ObjectStore,
    registry: ModelRegistry,
) -> None:
    """``ValidationFailed`` naming each initial model source that does not exist."""
    problems: list[Problem] = []
    model_ref = spec.model_ref
    if model_ref is not None:
        try:
            await registry.version(namespace, model_ref.name, model_ref.version)
        except NotFound as exc:
            problems.append(Problem("spec.modelRef", f"{exc.message} (register or upload the model first)"))
    checkpoint_ref = spec.checkpoint_ref
    if checkpoint_ref is not None:
        try:
            await require_checkpoint(store, namespace, checkpoint_ref.job, checkpoint_ref.round)
        except NotFound as exc:
            problems.append(Problem("spec.checkpointRef", exc.message))
    model_path = spec.model_path
    if model_path is not None:
        try:
            exists = await objects.exists(validate_key(f"{namespace}/{model_path}"))
        except InvalidKey as exc:
            problems.append(Problem("spec.modelPath", exc.message))
        else:
            if not exists:
                problems.append(
                    Problem(
                        "spec.modelPath",
                        f"no object {model_path!r} in the storage of namespace {namespace!r}",
                    )
                )
    if problems:
        raise invalid(problems)
