"""The ``nsfl`` SDK: the few calls that turn an ordinary training script into a federated one.

A user script does ``import nsfl``: before running it, the runner puts this
module in ``sys.modules["nsfl"]`` (it is also importable as
``task_executor.sdk``).  A script needs four calls::

    import nsfl

    data = np.load(os.path.join(nsfl.get_dataset_path("digits"), "train.npz"))
    model = build_model()
    nsfl.load_weights(model)                 # the round's global model
    if nsfl.is_evaluation():
        nsfl.commit_metrics({"accuracy": evaluate(model)})
    else:
        train(model, data, epochs=nsfl.get_parameter("epochs", 1))
        nsfl.commit_weights(model)           # the executor uploads trained - global
        nsfl.commit_metrics({"loss": last_loss})

The same script serves the three task kinds: ``train`` (commit the trained
model), ``evaluate`` (commit metrics of the global model on held-out data) and
``init`` (a job without an initial model asks one client to create it:
``load_weights`` then captures the model as built, with random generators
seeded from the job id, and quietly ends the script).

Models are ``torch.nn.Module`` or Keras 3 ``keras.Model`` objects, told apart
without importing the framework the script does not use.  Every function here
delegates to the current :class:`~task_executor.session.TaskSession`, so the
SDK itself holds no task state except :data:`cache`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, SupportsFloat

from task_executor import session as _session
from task_executor.errors import NoActiveTask, SdkError, UnknownDataset

__all__ = [
    "NoActiveTask",
    "SdkError",
    "UnknownDataset",
    "cache",
    "client_id",
    "commit_metrics",
    "commit_weights",
    "current_round",
    "get_dataset_path",
    "get_parameter",
    "is_evaluation",
    "job_id",
    "load_weights",
    "task_kind",
]

cache: dict[str, Any] = _session.CACHE
"""A dict that outlives one task in the same process: keep parsed data here
(``nsfl.cache.setdefault(...)``) so an executor that serves several rounds
reads it once."""


def get_dataset_path(name: str) -> str:
    """The local path of the dataset ``name`` granted to this task.

    Raises :class:`UnknownDataset` (a ``KeyError``) listing the datasets the
    task does have.
    """
    return _session.current().dataset_path(name)


def get_parameter(name: str, default: Any = None) -> Any:
    """The job's parameter ``name`` (from the job spec's ``parameters``), or ``default``."""
    return _session.current().parameter(name, default)


def load_weights(model: Any) -> bool:
    """Load the round's global model into ``model`` (a torch Module or a Keras Model).

    Returns True when weights were loaded.  For an ``init`` task it does not
    return: the model's own initial weights become the task's result and the
    script stops here, so build the model *before* calling it.
    """
    return _session.current().load_weights(model)


def commit_weights(model: Any, num_samples: int | None = None) -> None:
    """Submit ``model``'s trained weights as this client's update.

    ``num_samples`` weighs the update in the average; by default it is the
    sample count the client declared for the task's datasets.  The weights
    are copied now, so training the model further does not change the commit;
    a later call replaces an earlier one.  Ignored (with a warning) in an
    evaluation task.
    """
    _session.current().commit_weights(model, num_samples)


def commit_metrics(metrics: Mapping[str, SupportsFloat], *, num_samples: int | None = None) -> None:
    """Report metrics: at most 64 finite numbers named like ``accuracy`` or ``val/loss``.

    Values may be Python or numpy numbers or one-element tensors.

    Several calls merge (a later value for a name wins).  An evaluation task
    must call it; ``num_samples`` there says how many samples were evaluated.
    """
    _session.current().commit_metrics(metrics, num_samples)


def task_kind() -> str:
    """``"train"``, ``"evaluate"`` or ``"init"``."""
    return _session.current().spec.kind


def is_evaluation() -> bool:
    """Whether this task evaluates the global model instead of training it."""
    return task_kind() == "evaluate"


def current_round() -> int:
    """The federated round this task belongs to."""
    return _session.current().spec.round


def client_id() -> str:
    """This client's id, as its data owner configured it."""
    return _session.current().spec.client_id


def job_id() -> str:
    """The job's id, ``<namespace>/<name>``."""
    return _session.current().spec.job_id
